-- The shop's source of truth. Redis holds caches, sessions, counters and queues in front of it.
-- Money is integer cents; times are epoch milliseconds.

CREATE TABLE products (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,
  name        TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  category    TEXT    NOT NULL CHECK (length(category) BETWEEN 1 AND 50),
  price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
  stock       INTEGER NOT NULL CHECK (stock >= 0),
  -- Highest lock fence that wrote this row: a write carrying an older fence is refused
  -- (the fencing-token check that makes an expired lock holder harmless).
  fence       INTEGER NOT NULL DEFAULT 0,
  created_at  INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL
);
CREATE INDEX products_by_category ON products (category, id);

CREATE TABLE users (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  username      TEXT    NOT NULL UNIQUE COLLATE NOCASE,
  -- "pbkdf2-sha256$<iterations>$<salt b64>$<hash b64>"
  password_hash TEXT    NOT NULL,
  created_at    INTEGER NOT NULL
);

CREATE TABLE orders (
  id              TEXT    PRIMARY KEY,
  idempotency_key TEXT    NOT NULL UNIQUE,
  user_id         INTEGER REFERENCES users (id),
  total_cents     INTEGER NOT NULL CHECK (total_cents >= 0),
  created_at      INTEGER NOT NULL
);

CREATE TABLE order_items (
  order_id    TEXT    NOT NULL REFERENCES orders (id),
  product_id  INTEGER NOT NULL REFERENCES products (id),
  quantity    INTEGER NOT NULL CHECK (quantity > 0),
  price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
  PRIMARY KEY (order_id, product_id)
);

-- Write-behind target of the page-view stream (flushed by the cron trigger).
CREATE TABLE product_views (
  product_id INTEGER PRIMARY KEY REFERENCES products (id),
  views      INTEGER NOT NULL DEFAULT 0
);

-- Stream entry ids already applied to product_views, so a flush that is retried after a
-- failure between the D1 write and XACK never counts an entry twice.
CREATE TABLE applied_view_entries (
  entry_id   TEXT    PRIMARY KEY,
  applied_at INTEGER NOT NULL
);
