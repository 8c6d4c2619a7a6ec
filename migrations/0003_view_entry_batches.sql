-- Exact page views (src/functions/views.ts): each applied stream entry remembers its product and the
-- write-behind batch that applied it, so `GET /products/:id/views` can subtract from product_views the
-- entries Redis still counts as pending (in flight, or applied by a batch claimed after its snapshot).
ALTER TABLE applied_view_entries ADD COLUMN product_id INTEGER;
ALTER TABLE applied_view_entries ADD COLUMN seq INTEGER;
CREATE INDEX applied_view_entries_by_product ON applied_view_entries (product_id, seq);
