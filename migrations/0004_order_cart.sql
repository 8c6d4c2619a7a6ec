-- The cart an order was placed from (its id lives in the session beside the cart, see
-- src/functions/orders.ts). A cart is ordered at most once: a retry with a new Idempotency-Key
-- after Redis lost the key's record and the cart could not be emptied finds this order instead of
-- placing a second one. NULL for orders of carts written before carts had ids.
ALTER TABLE orders ADD COLUMN cart_id TEXT;
CREATE UNIQUE INDEX orders_by_cart ON orders (cart_id);
