-- The PostgreSQL hash-chain design, one pgbench transaction per append
-- (see docs/peers.md): the stream's head row is locked by the UPDATE, the
-- new signature chains to the last one with pgcrypto's HMAC, and the event
-- is inserted in the same statement. Under READ COMMITTED the head row's
-- lock is what keeps seqs unique; a waiting writer re-reads the new head.
WITH head AS (
  UPDATE heads
     SET seq = seq + 1,
         sig = hmac(sig || convert_to(repeat('x', 1024), 'UTF8'), 'bench-key', 'sha256')
   WHERE stream = 1
  RETURNING seq, sig
)
INSERT INTO events (stream, seq, payload, sig)
SELECT 1, seq, repeat('x', 1024), sig FROM head;
