//! The journal: an append-only log of opaque records, which lets the server acknowledge
//! a beacon as soon as its record is written, before the event writer commits it.
//!
//! A record is written with one `write` into the OS page cache, which survives the
//! process being killed (the durability SQLite's WAL gives with `synchronous=NORMAL`).
//! For power loss the caller also waits for [`Journal::sync_through`], which flushes
//! every record written so far with one `fdatasync`: callers that arrive while a flush
//! runs share the next one (group commit), so the disk's flush rate bounds flushes, not
//! records. The store records the last sequence number a committed batch contained (see
//! [`crate::Store::append_events`]), so after a crash the records past it are exactly the
//! acknowledged events that were never committed, and are replayed.
//!
//! Layout: segment files `<first seq, 20 digits>.log` in one directory; a record is
//! `len: u32 LE | seq: u64 LE | payload | check: u64 LE`, where `check` is FNV-1a over
//! everything before it. Reading stops at the first record that is incomplete or fails
//! its check (a write torn by a power cut): the log is cut there. Segments whose records
//! are all committed are deleted.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// A segment is closed once it holds this many bytes.
pub const SEGMENT_BYTES: u64 = 8 << 20;
/// The largest payload a record may carry.
pub const MAX_PAYLOAD: usize = 64 << 10;
const HEADER: usize = 4 + 8;
const TRAILER: usize = 8;

/// An open journal, ready to append after the records it recovered.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    file: File,
    /// First sequence number of each segment, oldest first; the last one is written to.
    segments: Vec<u64>,
    segment_len: u64,
    next_seq: u64,
    fsync: bool,
    buf: Vec<u8>,
}

/// What [`Journal::sync_through`] shares between callers.
#[derive(Debug, Default)]
pub struct Flusher {
    /// Every record up to this one is on disk.
    synced: std::sync::atomic::AtomicU64,
    /// One flush at a time; whoever waited behind it usually finds its record flushed.
    flushing: std::sync::Mutex<()>,
    flushes: std::sync::atomic::AtomicU64,
}

impl Flusher {
    /// How many `fdatasync` calls the journal's records have cost so far.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A record read back at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub payload: Vec<u8>,
}

fn check(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.log"))
}

/// The records of one segment's bytes, and how many bytes of it are whole records.
fn parse(bytes: &[u8]) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= HEADER + TRAILER {
        let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        let end = at + HEADER + len;
        if len > MAX_PAYLOAD || end + TRAILER > bytes.len() {
            break;
        }
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[end..end + TRAILER]);
        if check(&bytes[at..end]) != u64::from_le_bytes(word) {
            break;
        }
        word.copy_from_slice(&bytes[at + 4..at + HEADER]);
        records.push(Record { seq: u64::from_le_bytes(word), payload: bytes[at + HEADER..end].to_vec() });
        at = end + TRAILER;
    }
    (records, at)
}

impl Journal {
    /// Opens (or creates) the journal in `dir` and returns the records after `applied`
    /// (the last sequence number the store committed), in order. A torn tail is cut off.
    pub fn open(dir: &Path, applied: u64, fsync: bool) -> io::Result<(Journal, Vec<Record>)> {
        std::fs::create_dir_all(dir)?;
        let mut segments: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| entry.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
            .collect();
        segments.sort_unstable();
        let mut pending = Vec::new();
        let mut last_seq = applied;
        let mut kept = Vec::new();
        let mut torn = false;
        for &first in &segments {
            let path = segment_path(dir, first);
            if torn {
                // Nothing after a torn record can be trusted to follow it.
                tracing::warn!(segment = %path.display(), "journal segment after a torn record removed");
                std::fs::remove_file(&path)?;
                continue;
            }
            let mut bytes = Vec::new();
            File::open(&path)?.read_to_end(&mut bytes)?;
            let (records, whole) = parse(&bytes);
            if whole < bytes.len() {
                tracing::warn!(segment = %path.display(), bytes = bytes.len() - whole, "torn journal tail cut off");
                OpenOptions::new().write(true).open(&path)?.set_len(whole as u64)?;
                torn = true;
            }
            for r in records {
                last_seq = last_seq.max(r.seq);
                if r.seq > applied {
                    pending.push(r);
                }
            }
            kept.push(first);
        }
        let next_seq = last_seq + 1;
        let (file, segment_len) = match kept.last() {
            Some(&first) => {
                let file = OpenOptions::new().append(true).open(segment_path(dir, first))?;
                let len = file.metadata()?.len();
                (file, len)
            }
            None => {
                kept.push(next_seq);
                (Self::create(dir, next_seq, fsync)?, 0)
            }
        };
        if fsync {
            // What was recovered counts as flushed from here on.
            file.sync_data()?;
        }
        let journal =
            Journal { dir: dir.to_owned(), file, segments: kept, segment_len, next_seq, fsync, buf: Vec::new() };
        Ok((journal, pending))
    }

    fn create(dir: &Path, first_seq: u64, fsync: bool) -> io::Result<File> {
        let file = OpenOptions::new().create(true).append(true).open(segment_path(dir, first_seq))?;
        if fsync {
            // The new name must survive a power cut too.
            File::open(dir)?.sync_all()?;
        }
        Ok(file)
    }

    /// Appends one record and returns its sequence number. When this returns, the
    /// record survives the process being killed (and power loss, with `fsync`).
    pub fn append(&mut self, payload: &[u8]) -> io::Result<u64> {
        if payload.len() > MAX_PAYLOAD {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "journal record too large"));
        }
        if self.segment_len >= SEGMENT_BYTES {
            if self.fsync {
                // Flushes only ever look at the segment being written: finish this one.
                self.file.sync_data()?;
            }
            self.file = Self::create(&self.dir, self.next_seq, self.fsync)?;
            self.segments.push(self.next_seq);
            self.segment_len = 0;
        }
        let seq = self.next_seq;
        self.buf.clear();
        self.buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(&seq.to_le_bytes());
        self.buf.extend_from_slice(payload);
        let sum = check(&self.buf);
        self.buf.extend_from_slice(&sum.to_le_bytes());
        // One write: a process killed mid-call leaves the whole record or none of it
        // in the page cache; a partial record (power loss) fails its check on reading.
        if let Err(e) = self.file.write_all(&self.buf) {
            // Whatever part reached the file would hide every later record: cut it.
            let _ = self.file.set_len(self.segment_len);
            return Err(e);
        }
        self.segment_len += self.buf.len() as u64;
        self.next_seq += 1;
        Ok(seq)
    }

    /// Whether appends must be flushed ([`Journal::sync_through`]) before they count.
    pub fn fsync(&self) -> bool {
        self.fsync
    }

    /// Returns once record `seq` (appended to `journal` before) is on disk: at once if
    /// a flush already covered it, else after one `fdatasync` of the segment being
    /// written, which covers every record appended until then. Blocking: call it off
    /// the async runtime.
    pub fn sync_through(journal: &std::sync::Mutex<Journal>, flusher: &Flusher, seq: u64) -> io::Result<()> {
        use std::sync::atomic::Ordering;
        if flusher.synced.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        let _one_at_a_time = flusher.flushing.lock().unwrap_or_else(|p| p.into_inner());
        if flusher.synced.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        // The segment and how far it goes, taken under the journal's lock; the flush
        // itself runs without it, so appends go on meanwhile. Earlier segments were
        // flushed when they were closed.
        let (file, through) = {
            let j = journal.lock().unwrap_or_else(|p| p.into_inner());
            (j.file.try_clone()?, j.last_seq())
        };
        file.sync_data()?;
        flusher.flushes.fetch_add(1, Ordering::Relaxed);
        flusher.synced.fetch_max(through, Ordering::AcqRel);
        Ok(())
    }

    /// The sequence number of the last record appended (or recovered), 0 if none ever.
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Deletes the segments whose records are all at or below `applied` (committed).
    /// The segment being written is kept.
    pub fn release(&mut self, applied: u64) -> io::Result<()> {
        while self.segments.len() > 1 && self.segments[1] <= applied + 1 {
            std::fs::remove_file(segment_path(&self.dir, self.segments[0]))?;
            self.segments.remove(0);
        }
        Ok(())
    }

    /// How many segment files the journal has now.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("adtally-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn seqs(records: &[Record]) -> Vec<u64> {
        records.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn records_after_the_applied_one_come_back_in_order() {
        let dir = temp_dir("order");
        let (mut j, pending) = Journal::open(&dir, 0, false).expect("open");
        assert!(pending.is_empty());
        for i in 0..5u8 {
            assert_eq!(j.append(&[i; 3]).expect("append"), u64::from(i) + 1);
        }
        drop(j);
        let (j, pending) = Journal::open(&dir, 2, false).expect("reopen");
        assert_eq!(seqs(&pending), vec![3, 4, 5]);
        assert_eq!(pending[0].payload, vec![2, 2, 2]);
        assert_eq!(j.last_seq(), 5);
        drop(j);
        // Numbering continues after the store's checkpoint even with an empty log.
        std::fs::remove_dir_all(&dir).expect("clean");
        let (mut j, pending) = Journal::open(&dir, 41, false).expect("open empty");
        assert!(pending.is_empty());
        assert_eq!(j.append(b"x").expect("append"), 42);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_torn_tail_is_cut_and_appending_goes_on_after_the_last_whole_record() {
        let dir = temp_dir("torn");
        let (mut j, _) = Journal::open(&dir, 0, false).expect("open");
        for _ in 0..3 {
            j.append(b"payload").expect("append");
        }
        drop(j);
        let path = segment_path(&dir, 1);
        let len = std::fs::metadata(&path).expect("meta").len();
        // Half of the third record reached the disk; and a flipped byte in the second.
        OpenOptions::new().write(true).open(&path).expect("open").set_len(len - 5).expect("cut");
        let (mut j, pending) = Journal::open(&dir, 0, false).expect("reopen");
        assert_eq!(seqs(&pending), vec![1, 2]);
        assert_eq!(j.append(b"next").expect("append"), 3);
        drop(j);
        let mut bytes = std::fs::read(&path).expect("read");
        let second = HEADER + 7 + TRAILER + HEADER + 1;
        bytes[second] ^= 0xff;
        std::fs::write(&path, &bytes).expect("write");
        let (_, pending) = Journal::open(&dir, 0, false).expect("reopen");
        assert_eq!(seqs(&pending), vec![1], "nothing after a damaged record is trusted");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn one_flush_covers_every_record_written_before_it() {
        let dir = temp_dir("flush");
        let (j, _) = Journal::open(&dir, 0, true).expect("open");
        let (journal, flusher) = (std::sync::Mutex::new(j), Flusher::default());
        let append = |n: usize| {
            for _ in 0..n {
                journal.lock().expect("lock").append(b"beacon").expect("append");
            }
        };
        append(3);
        Journal::sync_through(&journal, &flusher, 1).expect("flush");
        assert_eq!(flusher.flushes(), 1);
        Journal::sync_through(&journal, &flusher, 3).expect("flush");
        assert_eq!(flusher.flushes(), 1, "records 2 and 3 were written before the first flush");
        append(1);
        Journal::sync_through(&journal, &flusher, 4).expect("flush");
        assert_eq!(flusher.flushes(), 2);
        // Eight callers waiting for the same records at once share one flush.
        append(8);
        let ready = std::sync::Barrier::new(8);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    ready.wait();
                    Journal::sync_through(&journal, &flusher, 12).expect("flush");
                });
            }
        });
        assert_eq!(flusher.flushes(), 3, "one flush for all eight");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn full_segments_roll_over_and_committed_ones_are_deleted() {
        let dir = temp_dir("segments");
        let (mut j, _) = Journal::open(&dir, 0, true).expect("open");
        let payload = vec![7u8; MAX_PAYLOAD];
        let per_segment = SEGMENT_BYTES.div_ceil((HEADER + MAX_PAYLOAD + TRAILER) as u64);
        let total = 2 * per_segment + 3;
        for _ in 0..total {
            j.append(&payload).expect("append");
        }
        assert_eq!(j.segment_count(), 3);
        j.release(per_segment - 1).expect("release");
        assert_eq!(j.segment_count(), 3, "the first segment still holds an uncommitted record");
        j.release(per_segment).expect("release");
        assert_eq!(j.segment_count(), 2);
        j.release(total).expect("release");
        assert_eq!(j.segment_count(), 1, "the segment being written stays");
        drop(j);
        let (_, pending) = Journal::open(&dir, 2 * per_segment, false).expect("reopen");
        assert_eq!(seqs(&pending), (2 * per_segment + 1..=total).collect::<Vec<_>>());
        assert!(Journal::open(&dir, 0, false).expect("reopen").0.append(&vec![0; MAX_PAYLOAD + 1]).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
