//! The write-ahead segment in front of redb (issue 14).
//!
//! A redb commit with `Durability::Immediate` writes about nine scattered
//! pages and one `fdatasync`; a sequential append of the batch's events
//! plus one `fdatasync` is the durability point instead. The writer thread
//! owns the segment and, per batch:
//!
//! 1. sequences and signs the batch's events in redb's write transaction
//!    (head rows and tree leaves; idempotency and deletion records read),
//! 2. appends one frame per new event here and starts its writeback,
//! 3. writes the events' rows into the transaction while the disk works,
//! 4. `fdatasync`s the frames,
//! 5. only then commits redb with `Durability::None` (readers see the
//!    events from now on, and never before they are durable here),
//! 6. answers, then publishes.
//!
//! A checkpoint (one `Immediate` commit, which persists every earlier
//! `None` commit) makes the segment redundant; it is then emptied by giving
//! it a new epoch. Frames carry the epoch in their checksum, so the frames
//! of an earlier epoch still in the file never replay. On open (and after
//! the writer reopens a failed handle, which loses `None` commits too)
//! `replay.rs` puts every record redb lacks back through the append's own
//! row writer.
//!
//! File layout (`journal.wal` beside `journal.redb`), preallocated with
//! zeros so that an append never changes the file's size or allocation and
//! `fdatasync` has no metadata to journal:
//! - header, [`HEADER_LEN`] bytes: [`MAGIC`], epoch (16 random bytes);
//! - frames from [`HEADER_LEN`] on: length (u32 LE) of the body, SHA-256
//!   of (epoch ‖ length ‖ body), body = version byte + postcard
//!   [`WalRecord`]. Replay stops at the first frame that does not check
//!   (a torn tail, zeros, an older epoch), unless a frame of the epoch
//!   further on proves that the one which failed was acknowledged
//!   (`wal_damage.rs`): then the segment is damaged and does not open.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::wal_damage::acknowledged_damage;
use super::{RECORD_VERSION, StoreError};

/// First bytes of a segment file; the last byte is the layout's version.
const MAGIC: &[u8; 8] = b"LBKWAL\0\x01";
/// Bytes before the first frame: the header, padded to one page.
pub(super) const HEADER_LEN: u64 = 4096;
/// Length, then checksum, in front of every frame's body.
pub(super) const FRAME_HEAD: usize = 4 + 32;
/// Size of the segment file. A batch whose frames do not fit in what is
/// left commits durably in redb instead, as a checkpoint. Bounds the replay
/// at start (about 6,000 events of 1 KiB: well under the 200 ms cold-start
/// budget with 1 M events, see `docs/benchmarks.md`) and the redb pages a
/// run of `None` commits keeps in memory.
pub(super) const SEGMENT_BYTES: u64 = 8 << 20;
/// Most frames one batch writes: one per new event of at most
/// `MAX_BATCH` appends. A frame that checks this many positions after one
/// that does not was written by a later batch, which the writer begins only
/// once the earlier one is synced and answered.
pub(super) const MAX_FRAMES_PER_BATCH: u64 = super::MAX_BATCH as u64;
/// The smallest segment made: on a small disk the segment takes at most an
/// eighth of the free space, but not less than this.
const MIN_SEGMENT_BYTES: u64 = 256 << 10;

/// One new event, with everything the append wrote besides it: enough to
/// write exactly the same rows again (`Tables::replay`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct WalRecord {
    /// The store-wide position: contiguous from one record to the next.
    pub(super) position: u64,
    pub(super) plan_id: [u8; 16],
    pub(super) seq: u64,
    /// The event as stored in the `events` table (version byte included).
    /// Written as bytes, in one copy: postcard encodes bytes and a sequence
    /// of `u8` alike (a length, then the bytes), but the sequence byte by byte.
    #[serde(serialize_with = "as_bytes")]
    pub(super) event: Vec<u8>,
    /// Idempotency-Key and request fingerprint, if the append had one.
    pub(super) idempotency: Option<(String, [u8; 32])>,
    /// (peer, message id) of each outbox copy the append queued.
    pub(super) outbox: Vec<(String, [u8; 16])>,
}

fn as_bytes<S: serde::Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

/// The path of the segment that belongs to the database at `db_path`.
pub fn segment_path(db_path: &Path) -> PathBuf {
    db_path.with_extension("wal")
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> StoreError {
    let fault = if e.raw_os_error() == Some(libc::ENOSPC) {
        super::Fault::Full
    } else {
        super::Fault::Io
    };
    StoreError::with_fault(format!("{what} {}: {e}", path.display()), fault)
}

/// The open segment file, owned by the writer thread.
#[derive(Debug)]
pub(super) struct Segment {
    path: PathBuf,
    file: File,
    epoch: [u8; 16],
    /// End of the last frame whose batch committed; the next one goes here.
    end: u64,
    /// The file's size, fixed when it was made; no frame goes past it.
    capacity: u64,
    /// Frames encoded for the batch in progress.
    pending: Vec<u8>,
    /// Set when frames past `end` may hold a batch that did not commit, or
    /// emptying failed: the next batch empties the segment first.
    pub(super) needs_reset: bool,
    /// When the first frame since the segment was last emptied committed.
    first_committed: Option<std::time::Instant>,
    /// Test switch: zeroing the frames of a failed batch fails.
    #[cfg(test)]
    pub(super) fail_zeroing: bool,
    /// Test switch: the next reset writes its header, then fails as if
    /// its `fdatasync` had.
    #[cfg(test)]
    pub(super) fail_header_sync: bool,
}

impl Segment {
    /// Opens the segment at `path`, creating it (zero-filled, with a fresh
    /// epoch) if missing. Returns it with the records of its current epoch.
    /// A header that is not a segment's refuses the open: it may guard
    /// records redb lacks.
    ///
    /// `durable` is the last position the database holds durably, when
    /// known: the epoch's first frame is at most one past it, which bounds
    /// the search for damage (`wal_damage.rs`).
    pub(super) fn open(
        path: &Path,
        durable: Option<u64>,
    ) -> Result<(Segment, Vec<WalRecord>), StoreError> {
        if !path.exists() {
            create(path)?;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| io_error(path, "opening the write-ahead segment", e))?;
        let mut header = [0u8; MAGIC.len() + 16];
        file.read_exact_at(&mut header, 0)
            .map_err(|e| io_error(path, "reading the write-ahead segment", e))?;
        if &header[..MAGIC.len()] != MAGIC {
            return Err(StoreError(format!(
                "{} is not a logbook write-ahead segment of this version; it may hold acknowledged events, so the store does not open (move it aside only if {} was shut down cleanly)",
                path.display(),
                path.with_extension("redb").display()
            )));
        }
        let epoch: [u8; 16] = header[MAGIC.len()..].try_into().expect("16 bytes");
        let capacity = file
            .metadata()
            .map_err(|e| io_error(path, "reading the write-ahead segment", e))?
            .len();
        let mut segment = Segment {
            path: path.to_path_buf(),
            file,
            epoch,
            end: HEADER_LEN,
            capacity,
            pending: Vec::new(),
            needs_reset: false,
            first_committed: None,
            #[cfg(test)]
            fail_zeroing: false,
            #[cfg(test)]
            fail_header_sync: false,
        };
        let (records, end) = segment.read_records(None, durable)?;
        segment.end = end;
        if !segment.is_empty() {
            segment.first_committed = Some(std::time::Instant::now());
        }
        Ok((segment, records))
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the segment holds no frame of its current epoch.
    pub(super) fn is_empty(&self) -> bool {
        self.end == HEADER_LEN
    }

    /// How long the oldest committed frame has waited for a checkpoint.
    pub(super) fn oldest_frame_age(&self) -> std::time::Duration {
        self.first_committed
            .map_or(std::time::Duration::ZERO, |t| t.elapsed())
    }

    /// Whether at least a quarter of the room for frames is used.
    pub(super) fn quarter_full(&self) -> bool {
        (self.end - HEADER_LEN) * 4 >= self.capacity.saturating_sub(HEADER_LEN)
    }

    /// The frames of the current epoch up to `limit` (or to the first frame
    /// that does not check), and where they end. Records that do not follow
    /// each other by position fail: frames are never written out of order.
    fn read_records(
        &self,
        limit: Option<u64>,
        durable: Option<u64>,
    ) -> Result<(Vec<WalRecord>, u64), StoreError> {
        let len = self.capacity;
        let limit = limit.unwrap_or(len).min(len);
        let mut bytes = vec![0u8; usize::try_from(limit.saturating_sub(HEADER_LEN)).unwrap_or(0)];
        self.file
            .read_exact_at(&mut bytes, HEADER_LEN)
            .map_err(|e| io_error(&self.path, "reading the write-ahead segment", e))?;
        let records = decode_frames(&self.epoch, &bytes, &self.path, durable)?;
        Ok((records.0, HEADER_LEN + records.1 as u64))
    }

    /// The frames of every batch that committed since the segment was
    /// last emptied. Each was synced and answered, so one that no longer
    /// reads back is damage, not a torn tail, unless the database holds its
    /// event durably (`durable`, its last position; see `decode_frames`).
    pub(super) fn committed_records(
        &self,
        durable: Option<u64>,
    ) -> Result<(Vec<WalRecord>, u64), StoreError> {
        let (records, end) = self.read_records(Some(self.end), durable)?;
        if end != self.end {
            return Err(StoreError(format!(
                "{}: the frame at byte {end} of an answered batch no longer checks (the frames end at byte {}): the segment lost an acknowledged event",
                self.path.display(),
                self.end
            )));
        }
        Ok((records, end))
    }

    /// Encodes the batch's records as frames, to be written by
    /// [`Segment::write_pending`]. Returns false when they do not fit in
    /// the rest of the segment.
    pub(super) fn prepare(&mut self, records: &[WalRecord]) -> bool {
        // Replay's damage check relies on it (`wal_damage.rs`).
        assert!(
            records.len() as u64 <= MAX_FRAMES_PER_BATCH,
            "a batch writes at most MAX_FRAMES_PER_BATCH frames"
        );
        self.pending.clear();
        for record in records {
            encode_frame(&self.epoch, record, &mut self.pending);
        }
        self.end + self.pending.len() as u64 <= self.capacity
    }

    /// Writes the prepared frames after the last committed one and starts
    /// their writeback, so that the device works while the writer writes
    /// the batch's rows. [`Segment::sync_pending`] then makes them durable.
    pub(super) fn write_pending(&mut self) -> Result<(), StoreError> {
        // Whatever happens next, frames past `end` may now be on disk.
        self.needs_reset = true;
        self.file
            .write_all_at(&self.pending, self.end)
            .map_err(|e| io_error(&self.path, "writing the write-ahead segment", e))?;
        start_writeback(&self.file, self.end, self.pending.len());
        Ok(())
    }

    /// `fdatasync`s the frames [`Segment::write_pending`] wrote: the
    /// batch's durability point. They count as committed only after
    /// [`Segment::committed`].
    pub(super) fn sync_pending(&mut self) -> Result<(), StoreError> {
        self.file
            .sync_data()
            .map_err(|e| io_error(&self.path, "writing the write-ahead segment", e))?;
        self.needs_reset = false;
        Ok(())
    }

    /// The batch of the written frames committed in redb.
    pub(super) fn committed(&mut self) {
        debug_assert!(
            !self.needs_reset,
            "frames count as committed only once synced (or when there are none)"
        );
        if self.is_empty() && !self.pending.is_empty() {
            self.first_committed = Some(std::time::Instant::now());
        }
        self.end += self.pending.len() as u64;
        self.pending.clear();
    }

    /// The batch of the written frames failed, and its appends were told
    /// so: its frames must never replay. They are zeroed and synced at
    /// once, so that a crash before the next checkpoint cannot bring back
    /// an append answered with an error (replay stops at the first frame
    /// that does not check). Emptying the segment after a checkpoint is
    /// what guarantees it if zeroing fails too; until then
    /// [`Segment::needs_reset`] stays set. Returns false when zeroing
    /// failed.
    #[must_use]
    pub(super) fn abandoned(&mut self) -> bool {
        let written = self.end..self.end + self.pending.len() as u64;
        self.pending.clear();
        self.needs_reset = true;
        if written.is_empty() {
            return true;
        }
        #[cfg(test)]
        if self.fail_zeroing {
            return false;
        }
        if let Err(e) =
            zero_fill(&self.file, written.start, written.end).and_then(|()| self.file.sync_data())
        {
            tracing::error!(error = %e, path = %self.path.display(), "zeroing the frames of a failed batch failed; a crash before the next checkpoint may bring them back");
            return false;
        }
        true
    }

    /// Empties the segment: a new epoch in the header, `fdatasync`ed. Only
    /// after a checkpoint made every frame's event durable in redb.
    pub(super) fn reset(&mut self) -> Result<(), StoreError> {
        // Until the new header is synced, the file may hold either epoch (a
        // failed sync can leave the new one in the page cache, which is what
        // the next open reads): no frame may be written under either, so a
        // failure leaves the segment to be emptied again first.
        self.needs_reset = true;
        let epoch = uuid::Uuid::new_v4().into_bytes();
        #[cfg(test)]
        if std::mem::take(&mut self.fail_header_sync) {
            self.file.write_all_at(&header(&epoch), 0).unwrap();
            let injected = std::io::Error::other("injected fdatasync failure");
            return Err(io_error(
                &self.path,
                "emptying the write-ahead segment",
                injected,
            ));
        }
        write_header(&self.file, &epoch)
            .map_err(|e| io_error(&self.path, "emptying the write-ahead segment", e))?;
        self.epoch = epoch;
        self.end = HEADER_LEN;
        self.needs_reset = false;
        self.first_committed = None;
        Ok(())
    }

    /// [`Segment::reset`], with every byte after the header zeroed first:
    /// after a redaction or a compaction no payload lingers in old frames.
    pub(super) fn wipe(&mut self) -> Result<(), StoreError> {
        zero_fill(&self.file, HEADER_LEN, self.capacity)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| io_error(&self.path, "wiping the write-ahead segment", e))?;
        self.reset()
    }
}

/// Starts writing `len` bytes at `offset` of `file` to the device without
/// waiting (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`), where Linux
/// has it. Only a head start: `fdatasync` alone decides durability, so a
/// failure here is ignored. It cannot hide a write error from that sync:
/// without a wait flag the call starts writeback and never consumes the
/// file's error state, which only `fsync`/`fdatasync` do.
fn start_writeback(file: &File, offset: u64, len: usize) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: a plain system call on an open descriptor; no memory is shared.
        let done = unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
        };
        if done != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "starting the segment's writeback failed; the sync writes it");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Creates a zero-filled segment with a fresh epoch under a temporary
/// name, then renames it into place: a crash never leaves a half-made
/// segment under the real name.
fn create(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let partial = path.with_extension("wal.creating");
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let capacity = super::handle::available_bytes(dir).map_or(SEGMENT_BYTES, |free| {
        (free / 8).clamp(MIN_SEGMENT_BYTES, SEGMENT_BYTES)
    }) / HEADER_LEN
        * HEADER_LEN;
    let make = || -> std::io::Result<()> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)?;
        // Real zeros, not a hole or fallocate's unwritten extents: writing
        // into those changes the extent map, which fdatasync must journal.
        zero_fill(&file, 0, capacity)?;
        write_header(&file, &uuid::Uuid::new_v4().into_bytes())?;
        file.sync_all()?;
        std::fs::rename(&partial, path)?;
        File::open(dir)?.sync_all()
    };
    make().map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        io_error(path, "creating the write-ahead segment", e)
    })
}

fn zero_fill(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; 1 << 20];
    let mut at = from;
    while at < to {
        let n = (to - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

fn header(epoch: &[u8; 16]) -> [u8; MAGIC.len() + 16] {
    let mut header = [0u8; MAGIC.len() + 16];
    header[..MAGIC.len()].copy_from_slice(MAGIC);
    header[MAGIC.len()..].copy_from_slice(epoch);
    header
}

fn write_header(file: &File, epoch: &[u8; 16]) -> std::io::Result<()> {
    file.write_all_at(&header(epoch), 0)?;
    file.sync_data()
}

pub(super) fn checksum(epoch: &[u8; 16], len: [u8; 4], body: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(epoch);
    hash.update(len);
    hash.update(body);
    hash.finalize().into()
}

/// Appends one frame holding `record` to `out`.
pub(super) fn encode_frame(epoch: &[u8; 16], record: &WalRecord, out: &mut Vec<u8>) {
    // The body is encoded in place, behind room for its length and checksum.
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEAD]);
    super::encode_into(record, out);
    let body = &out[start + FRAME_HEAD..];
    let len = u32::try_from(body.len())
        .expect("a record is bounded by the event size limit")
        .to_le_bytes();
    let sum = checksum(epoch, len, body);
    out[start..start + 4].copy_from_slice(&len);
    out[start + 4..start + FRAME_HEAD].copy_from_slice(&sum);
}

/// The records of the frames of `epoch` at the start of `bytes`, and the
/// number of bytes they take. Stops at the first frame that does not check.
pub(super) fn decode_frames(
    epoch: &[u8; 16],
    bytes: &[u8],
    path: &Path,
    durable: Option<u64>,
) -> Result<(Vec<WalRecord>, usize), StoreError> {
    let mut records: Vec<WalRecord> = Vec::new();
    let mut at = 0;
    let mut skipped = false;
    // One bound on the work of every search after a frame that fails.
    let mut budget = super::wal_damage::search_budget(bytes);
    while let Some(head) = bytes.get(at..at + FRAME_HEAD) {
        let len: [u8; 4] = head[..4].try_into().expect("4 bytes");
        let body = bytes
            .get(at + FRAME_HEAD..)
            .and_then(|rest| rest.get(..u32::from_le_bytes(len) as usize))
            .filter(|body| !body.is_empty() && head[4..] == checksum(epoch, len, body));
        // A frame that does not check, its length damaged too or not.
        let Some(body) = body else {
            // A frame of a position redb holds durably is not needed: go on
            // from the next frame that checks, if every position before it
            // is one redb holds. Else the stop below.
            let taken = records.last().map(|r| r.position);
            if let Some(durable) = durable
                && let Some(next) = super::wal_damage::next_frame_within(
                    epoch,
                    bytes,
                    at,
                    (taken, durable.saturating_add(1)),
                    &mut budget,
                )
            {
                tracing::warn!(
                    path = %path.display(),
                    at = HEADER_LEN as usize + at,
                    resumed_at = HEADER_LEN as usize + next,
                    durable,
                    "a write-ahead frame does not check, but the events it and the frames up to the next one held are durable in the database; replay goes on from the next frame"
                );
                skipped = true;
                at = next;
                continue;
            }
            // Only events above what redb holds durably can be lost: the
            // failed frame's position is exactly the one after the last
            // frame taken, and, as the epoch's first, at most one past
            // redb's (a checkpoint comes before each new epoch).
            let after_last = records.last().map(|r| r.position.saturating_add(1));
            let after_durable = durable.map(|d| d.saturating_add(1));
            let bound = after_last.max(after_durable);
            if let Some(damage) = acknowledged_damage(epoch, bytes, at, bound, &mut budget) {
                return Err(StoreError(format!(
                    "{}: the frame at byte {} does not check, but the frame at byte {} holds position {}, which a later batch wrote: the segment lost an acknowledged event, so the store does not open rather than go on without it. Restore journal.redb and journal.wal together from a backup; or, to open it without the events written since the last checkpoint, move journal.wal aside",
                    path.display(),
                    HEADER_LEN as usize + at,
                    HEADER_LEN as usize + damage.offset,
                    damage.position,
                )));
            }
            break;
        };
        // A frame that checks was written by this build's writer: a record
        // that does not decode, or a position out of order, is damage.
        let record: WalRecord = super::decode(body).map_err(|e| {
            StoreError(format!(
                "{}: frame at byte {} checks but does not decode: {e}",
                path.display(),
                HEADER_LEN as usize + at
            ))
        })?;
        // After a skip, the positions between are ones redb holds.
        let after_skip = std::mem::take(&mut skipped);
        if let Some(last) = records.last()
            && (record.position <= last.position
                || (record.position != last.position + 1 && !after_skip))
        {
            return Err(StoreError(format!(
                "{}: frame at byte {} holds position {} after {}",
                path.display(),
                HEADER_LEN as usize + at,
                record.position,
                last.position
            )));
        }
        records.push(record);
        at += FRAME_HEAD + body.len();
    }
    Ok((records, at))
}

// The record's version byte is the store's: `encode` writes RECORD_VERSION.
const _: u8 = RECORD_VERSION;

#[cfg(test)]
#[path = "wal_frames.rs"]
mod tests;
