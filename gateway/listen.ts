/**
 * The HTTP server and its socket-level limits: at most GATEWAY_MAX_SOCKETS open sockets (more are
 * closed as soon as they are accepted, before a byte is read, so no command can have run; the
 * Upstash client retries such network errors with backoff), a deadline for the headers and one
 * for the whole request (slow-loris clients), and an idle timeout between keep-alive requests.
 * Requests Node rejects before they reach the gateway get a JSON error too.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { GatewayConfig } from './config.ts';

export interface RunningGateway {
  url: string;
  host: string;
  port: number;
  close(): Promise<void>;
}

export interface Handlers {
  handle(req: IncomingMessage, res: ServerResponse): void;
  /** Shutdown began: stop streams, mark answers `connection: close`. */
  onClosing(): void;
  /** Every socket is closed. */
  onClosed(): Promise<void>;
}

function formatUrl(host: string, port: number): string {
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/** A whole HTTP/1.1 answer written straight to a socket Node's parser gave up on. */
function rawAnswer(status: number, reason: string, message: string): string {
  const body = JSON.stringify({ error: message });
  return `HTTP/1.1 ${status} ${reason}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`;
}

function onClientError(config: GatewayConfig) {
  return (err: Error & { code?: string }, socket: Socket) => {
    if (!socket.writable || socket.writableLength > 0) {
      socket.destroy();
      return;
    }
    let answer: string;
    if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      answer = rawAnswer(408, 'Request Timeout', `ERR the request did not arrive in time (GATEWAY_HEADERS_TIMEOUT_MS=${config.headersTimeoutMs} for the headers, GATEWAY_BODY_TIMEOUT_MS=${config.bodyTimeoutMs} for all of it)`);
    } else if (err.code === 'HPE_HEADER_OVERFLOW') {
      answer = rawAnswer(431, 'Request Header Fields Too Large', 'ERR the request headers are too large');
    } else {
      answer = rawAnswer(400, 'Bad Request', 'ERR the request is not valid HTTP/1.1');
    }
    socket.end(answer);
  };
}

/** Listens as `config` says; resolves once listening. */
export async function listen(config: GatewayConfig, h: Handlers): Promise<RunningGateway> {
  const server: Server = createServer(
    {
      keepAliveTimeout: config.idleTimeoutMs,
      headersTimeout: config.headersTimeoutMs,
      requestTimeout: config.bodyTimeoutMs,
      // How often Node checks the two timeouts above; its default (30 s) would let a slow client
      // hold a socket up to 30 s past them.
      connectionsCheckingInterval: Math.max(50, Math.min(1_000, Math.floor(config.headersTimeoutMs / 4))),
    },
    h.handle,
  );
  server.maxConnections = config.maxSockets;
  server.on('clientError', onClientError(config));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: config.host, port: config.port, ipv6Only: false }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const displayHost = config.host === '0.0.0.0' ? '127.0.0.1' : config.host === '::' ? '::1' : config.host;
  let closing: Promise<void> | undefined;
  return {
    url: `${formatUrl(displayHost, port)}${config.basePath}`,
    host: config.host,
    port,
    close() {
      closing ??= (async () => {
        h.onClosing();
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        // In-flight requests finish (their answers close the socket); idle ones are closed as they
        // become idle; whatever is still open after the deadline (capped at 10 s) is cut.
        const sweep = setInterval(() => server.closeIdleConnections(), 50);
        const timer = setTimeout(() => server.closeAllConnections(), Math.min(config.timeoutMs, 10_000));
        await closed;
        clearInterval(sweep);
        clearTimeout(timer);
        await h.onClosed();
      })();
      return closing;
    },
  };
}
