//! The commit journal: what makes a durable write cheap.
//!
//! A redb commit with `Durability::Immediate` copies every B-tree page the
//! group touched, checksums it, writes it and fsyncs the file; for a group of
//! small random writes that is most of the cost of a write (see
//! docs/benchmarks.md). With the journal, the writer applies a group in a redb
//! transaction that commits with `Durability::None`, but before that commit
//! makes the group visible, it appends the group's ops to this file as one
//! record and `fdatasync`s it: one small sequential write per group. A
//! checkpoint (a durable redb commit, at least every second and whenever the
//! journal is full) makes everything before it durable in redb, and the
//! journal starts over from its beginning.
//!
//! Recovery, at startup and after the database was reopened following an I/O
//! error, replays the records written after the last checkpoint, in order,
//! then checkpoints. Which records those are is decided by two values in the
//! `meta` table: every journaled transaction records the sequence number of
//! its record (so the database itself says which records it holds, even if a
//! non-durable commit reached the disk), and each checkpoint writes a fresh
//! random key that every later record's checksum includes. A record counts
//! only if its sequence number follows the previous one and its keyed
//! checksum matches, so a torn tail, records left over from before the
//! checkpoint, and record-like bytes inside old values (which clients chose)
//! are never replayed.
//!
//! The file is zero-filled ahead of use and then overwritten in place, so an
//! append's `fdatasync` writes data blocks only, not the file's size.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use drasi_store_protocol::Limits;
use drasi_store_protocol::wal::{AppendId, WalCapacityPolicy, WalConfig};
use drasi_store_protocol::{EntriesFrame, KeysFrame};
use redb::{Database, ReadableDatabase as _, Table};

use super::schema::{META, META_JOURNAL_KEY, META_JOURNAL_SEQ};
use super::tables::Tables;
use super::wal::WalOp;
use super::writer::WriteOp;
use super::{EngineResult, StorageContext as _};

/// The journal's file name, next to the database file.
pub const JOURNAL_NAME: &str = "state.journal";

/// Most bytes the journal file grows to. A group whose record would not fit
/// after the records since the last checkpoint makes a checkpoint instead
/// (a durable redb commit), so this bounds the disk the journal takes and
/// the work of a replay, not the size of a write.
pub(crate) const MAX_BYTES: u64 = 128 * 1024 * 1024;
/// The file grows in steps of at least this much, each zero-filled and
/// synced once, so that appends rarely change its size.
const GROW_STEP: u64 = 4 * 1024 * 1024;
/// Alignment and size unit of direct I/O writes (a multiple of every
/// common logical block size).
const BLOCK: usize = 4096;
/// The largest write buffer kept between appends.
const SCRATCH_KEEP: usize = 1024 * 1024;

const MAGIC: u32 = 0x4C4E_524A; // "JRNL", little-endian
/// magic u32, payload length u32, sequence u64, checksum u32.
const HEADER: usize = 20;

/// The journal's position as a checkpoint records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// The last record the checkpoint covers; replay starts after it.
    pub seq: u64,
    /// Part of every later record's checksum.
    pub key: u64,
}

impl Checkpoint {
    /// The journal position the database holds: the last record applied
    /// and the key of the last checkpoint (zeros in a database that never
    /// had a journal).
    pub(crate) fn load(db: &Database) -> anyhow::Result<Checkpoint> {
        let txn = db.begin_read()?;
        let meta = txn.open_table(META)?;
        let read =
            |name: &str| -> anyhow::Result<u64> { Ok(meta.get(name)?.map_or(0, |g| g.value())) };
        Ok(Checkpoint {
            seq: read(META_JOURNAL_SEQ)?,
            key: read(META_JOURNAL_KEY)?,
        })
    }

    /// Records that the transaction applies journal record `seq`.
    pub(crate) fn save_applied(
        meta: &mut Table<'_, &'static str, u64>,
        seq: u64,
    ) -> EngineResult<()> {
        meta.insert(META_JOURNAL_SEQ, seq)
            .ctx("write journal position")?;
        Ok(())
    }

    /// Writes the checkpoint into the transaction that makes it durable.
    pub(crate) fn save(&self, meta: &mut Table<'_, &'static str, u64>) -> EngineResult<()> {
        meta.insert(META_JOURNAL_SEQ, self.seq)
            .ctx("write journal checkpoint")?;
        meta.insert(META_JOURNAL_KEY, self.key)
            .ctx("write journal checkpoint")?;
        Ok(())
    }
}

/// Why an append did not happen.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// The record does not fit before [`MAX_BYTES`]; nothing was written.
    Full,
    /// Writing or syncing failed; the record may be partly on disk.
    Io(io::Error),
}

pub(crate) struct Journal {
    /// Reads, zero-filling, and appends when `direct` is not available.
    file: File,
    /// The same file opened with `O_DIRECT | O_DSYNC`, for appends.
    direct: Option<File>,
    /// With `direct`: the bytes from the start of the block holding `end`
    /// up to `end`.
    tail: Vec<u8>,
    /// Room for a block-aligned write buffer.
    scratch: Vec<u8>,
    path: PathBuf,
    /// Bytes of the file that exist (zero-filled or written).
    allocated: u64,
    /// Where the next record goes.
    end: u64,
    /// Where the last record appended starts.
    last_at: u64,
    /// Sequence number of the last record appended or checkpointed.
    last_seq: u64,
    key: u64,
}

impl Journal {
    /// Opens (or creates) the journal at `path`; [`Journal::recover`] must
    /// run before the first append.
    pub(crate) fn open(path: &Path) -> io::Result<Journal> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let allocated = file.metadata()?.len();
        // Direct I/O with O_DSYNC makes an append one write that returns
        // once durable, which costs less than a buffered write plus
        // fdatasync. Filesystems without it (tmpfs) get the latter.
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
            .open(path)
            .ok();
        Ok(Journal {
            file,
            direct,
            tail: Vec::new(),
            scratch: Vec::new(),
            path: path.to_path_buf(),
            allocated,
            end: 0,
            last_at: 0,
            last_seq: 0,
            key: 0,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Replays every record written after the database's last checkpoint
    /// in one durable transaction that also records a new checkpoint, so
    /// the journal can start over. Answers how many records were replayed.
    pub(crate) fn recover(&mut self, db: &Database) -> anyhow::Result<u64> {
        let since = Checkpoint::load(db)?;
        let (records, last) = self.scan(since)?;
        let mut txn = db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        let replayed = records.len() as u64;
        self.last_seq = last;
        let next = self.next_checkpoint();
        {
            let mut tables = Tables::open(&txn)?;
            for ops in &records {
                for op in ops {
                    tables.apply(op)?;
                }
            }
            tables.save_counters()?;
            tables.save_checkpoint(next)?;
        }
        txn.commit()?;
        self.checkpointed(next);
        Ok(replayed)
    }

    /// The valid records after `since.seq`, decoded, in order, and the
    /// sequence number of the last one (`since.seq` when there is none).
    ///
    /// The records since the last checkpoint start at offset 0. The
    /// database may already hold some of them (a non-durable commit can
    /// reach the disk before a crash): those have a sequence number at or
    /// below `since.seq` and are skipped.
    fn scan(&self, since: Checkpoint) -> anyhow::Result<(Vec<Vec<WriteOp>>, u64)> {
        let mut records = Vec::new();
        let mut last = None::<u64>;
        let mut at = 0u64;
        let mut header = [0u8; HEADER];
        while at + HEADER as u64 <= self.allocated {
            self.file.read_exact_at(&mut header, at)?;
            let word = |range: std::ops::Range<usize>| &header[range];
            let magic = u32::from_le_bytes(word(0..4).try_into().expect("4 bytes"));
            let len = u32::from_le_bytes(word(4..8).try_into().expect("4 bytes"));
            let seq = u64::from_le_bytes(word(8..16).try_into().expect("8 bytes"));
            let crc = u32::from_le_bytes(word(16..20).try_into().expect("4 bytes"));
            let body_end = at + HEADER as u64 + u64::from(len);
            let in_order = match last {
                Some(prev) => seq == prev + 1,
                None => seq <= since.seq + 1,
            };
            if magic != MAGIC || !in_order || body_end > self.allocated {
                break;
            }
            let mut payload = vec![0u8; len as usize];
            self.file.read_exact_at(&mut payload, at + HEADER as u64)?;
            if checksum(since.key, seq, &payload) != crc {
                break;
            }
            if seq > since.seq {
                // A record with a valid keyed checksum was written by this
                // server: failing to decode it is a bug or damage, and
                // skipping it would lose acknowledged writes, so recovery
                // stops with an error instead.
                let ops = decode(Bytes::from(payload)).map_err(|e| {
                    anyhow::anyhow!(
                        "journal {} record {seq} at offset {at} is damaged: {e}",
                        self.path.display()
                    )
                })?;
                records.push(ops);
            }
            last = Some(seq);
            at = body_end;
        }
        Ok((records, last.unwrap_or(since.seq).max(since.seq)))
    }

    /// Sequence number the next record gets: a journaled transaction
    /// records it as applied.
    pub(crate) fn next_seq(&self) -> u64 {
        self.last_seq + 1
    }

    /// The checkpoint a durable commit made now would record.
    pub(crate) fn next_checkpoint(&self) -> Checkpoint {
        Checkpoint {
            seq: self.last_seq,
            key: rand::random(),
        }
    }

    /// After the durable commit that saved `cp`: records start over at the
    /// beginning of the file.
    pub(crate) fn checkpointed(&mut self, cp: Checkpoint) {
        self.end = 0;
        self.last_at = 0;
        self.tail.clear();
        self.last_seq = cp.seq;
        self.key = cp.key;
    }

    /// Whether a record of `payload_len` bytes fits before the next
    /// checkpoint.
    pub(crate) fn fits(&self, payload_len: usize) -> bool {
        self.end + (HEADER + payload_len) as u64 + BLOCK as u64 <= MAX_BYTES
    }

    /// Writes `payload` as the next record and syncs it.
    pub(crate) fn append(&mut self, payload: &[u8]) -> Result<(), AppendError> {
        if !self.fits(payload.len()) {
            return Err(AppendError::Full);
        }
        let len = u32::try_from(payload.len()).map_err(|_| AppendError::Full)?;
        let seq = self.last_seq + 1;
        let mut record = Vec::with_capacity(HEADER + payload.len());
        record.extend_from_slice(&MAGIC.to_le_bytes());
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&seq.to_le_bytes());
        record.extend_from_slice(&checksum(self.key, seq, payload).to_le_bytes());
        record.extend_from_slice(payload);
        self.write_at_end(&record).map_err(AppendError::Io)?;
        self.last_at = self.end;
        self.end += record.len() as u64;
        self.tail_after_write(&record);
        self.last_seq = seq;
        Ok(())
    }

    /// Writes `bytes` at `end` and makes them durable, without moving
    /// `end`. With direct I/O the whole blocks from the one holding `end`
    /// are written: the tail of earlier records in that block again (the
    /// same bytes, so a torn block write cannot change them), then `bytes`,
    /// then zeros up to the block boundary.
    fn write_at_end(&mut self, bytes: &[u8]) -> io::Result<()> {
        let needed = self.end + (bytes.len() + BLOCK) as u64;
        if needed > self.allocated {
            self.grow(needed)?;
        }
        if let Some(direct) = &self.direct {
            let block_start = self.end - self.end % BLOCK as u64;
            let used = self.tail.len() + bytes.len();
            let padded = used.div_ceil(BLOCK) * BLOCK;
            if self.scratch.len() < padded + BLOCK {
                self.scratch = vec![0u8; padded + BLOCK];
            }
            let offset = self.scratch.as_ptr().align_offset(BLOCK);
            let out = &mut self.scratch[offset..offset + padded];
            out[..self.tail.len()].copy_from_slice(&self.tail);
            out[self.tail.len()..used].copy_from_slice(bytes);
            out[used..].fill(0);
            let written = direct.write_all_at(out, block_start);
            // A large group's buffer is not kept: memory stays bounded by
            // what is in flight, not by the largest write ever seen.
            if self.scratch.len() > SCRATCH_KEEP {
                self.scratch = Vec::new();
            }
            match written {
                Ok(()) => return Ok(()),
                // The filesystem took O_DIRECT at open but refuses the
                // write (some network and FUSE filesystems): use the page
                // cache and fdatasync from now on.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::warn!(
                        path = %self.path.display(),
                        "direct I/O refused; the journal uses fdatasync instead"
                    );
                    self.direct = None;
                }
                Err(e) => return Err(e),
            }
        }
        self.file.write_all_at(bytes, self.end)?;
        self.file.sync_data()
    }

    /// Keeps the bytes of the block holding the new `end` (direct I/O
    /// rewrites them with the next record).
    fn tail_after_write(&mut self, written: &[u8]) {
        let in_block = (self.end % BLOCK as u64) as usize;
        let mut joined = std::mem::take(&mut self.tail);
        joined.extend_from_slice(written);
        self.tail = joined[joined.len() - in_block..].to_vec();
    }

    /// Reads the tail block back from the file after `end` moved back.
    fn reload_tail(&mut self) -> io::Result<()> {
        let in_block = (self.end % BLOCK as u64) as usize;
        self.tail = vec![0u8; in_block];
        self.file
            .read_exact_at(&mut self.tail, self.end - in_block as u64)
    }

    /// Forgets the last append without touching the file, as if its
    /// write had gone through but its sync had failed.
    #[cfg(test)]
    pub(crate) fn forget_last(&mut self) {
        self.end = self.last_at;
        self.last_seq -= 1;
        self.reload_tail().expect("reading the journal back");
    }

    /// Invalidates the record at the end (the last one appended when
    /// `appended`, else a failed append's partial write) by zeroing its
    /// header, so that no recovery replays a group that was answered with
    /// an error. Fails only if the disk does.
    pub(crate) fn discard(&mut self, appended: bool) -> io::Result<()> {
        if appended {
            self.end = self.last_at;
            self.last_seq -= 1;
        }
        self.reload_tail()?;
        self.write_at_end(&[0u8; HEADER])
    }

    /// Zero-fills the file up to at least `needed` bytes and syncs it,
    /// size included.
    fn grow(&mut self, needed: u64) -> io::Result<()> {
        let target = needed
            .max(self.allocated + GROW_STEP)
            .min(MAX_BYTES.max(needed))
            .next_multiple_of(BLOCK as u64);
        let zeros = vec![0u8; 1024 * 1024];
        let mut at = self.allocated;
        let result = (|| {
            while at < target {
                let n = (target - at).min(zeros.len() as u64) as usize;
                self.file.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
            self.file.sync_all()
        })();
        // A failed grow (a full disk) may leave part of the zeros behind:
        // they are usable, and the size is what the filesystem says.
        self.allocated = self
            .file
            .metadata()
            .map_or(at.min(self.allocated), |m| m.len());
        result
    }
}

/// CRC-32 over the key, the sequence number and the payload.
fn checksum(key: u64, seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&key.to_le_bytes());
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

// Op tags of the record payload.
const SET: u8 = 1;
const DELETE: u8 = 2;
const SET_MANY: u8 = 3;
const DELETE_MANY: u8 = 4;
const CLEAR: u8 = 5;
const WAL_REGISTER: u8 = 6;
const WAL_APPEND: u8 = 7;
const WAL_PRUNE: u8 = 8;
const WAL_DELETE: u8 = 9;

/// Encodes a group's ops as a record payload; `None` when an op cannot be
/// journaled (an import reads its records from a spool file, a sync asks
/// for a durable commit), so the group is committed durably instead.
pub(crate) fn encode<'a>(ops: impl Iterator<Item = &'a WriteOp> + Clone) -> Option<Vec<u8>> {
    let size: usize = ops.clone().map(|op| op.payload_bytes() + 64).sum();
    let mut out = Vec::with_capacity(size + 4);
    let mut count = 0u32;
    out.extend_from_slice(&0u32.to_le_bytes());
    for op in ops {
        count += 1;
        match op {
            WriteOp::Set { store, key, value } => {
                out.push(SET);
                put(&mut out, store.as_bytes());
                put(&mut out, key.as_bytes());
                put(&mut out, value);
            }
            WriteOp::Delete { store, key } => {
                out.push(DELETE);
                put(&mut out, store.as_bytes());
                put(&mut out, key.as_bytes());
            }
            WriteOp::SetMany { store, entries } => {
                out.push(SET_MANY);
                put(&mut out, store.as_bytes());
                put(&mut out, entries.frame());
            }
            WriteOp::DeleteMany { store, keys } => {
                out.push(DELETE_MANY);
                put(&mut out, store.as_bytes());
                put(&mut out, keys.frame());
            }
            WriteOp::Clear { store } => {
                out.push(CLEAR);
                put(&mut out, store.as_bytes());
            }
            WriteOp::Wal(WalOp::Register { source, config }) => {
                out.push(WAL_REGISTER);
                put(&mut out, source.as_bytes());
                out.extend_from_slice(&config.max_events.to_le_bytes());
                out.push(match config.capacity_policy {
                    WalCapacityPolicy::RejectIncoming => 0,
                    WalCapacityPolicy::OverwriteOldest => 1,
                });
            }
            WriteOp::Wal(WalOp::Append {
                source,
                append_id,
                event,
            }) => {
                out.push(WAL_APPEND);
                put(&mut out, source.as_bytes());
                match append_id {
                    Some(id) => {
                        out.push(1);
                        out.extend_from_slice(&id.0.to_le_bytes());
                    }
                    None => out.push(0),
                }
                put(&mut out, event);
            }
            WriteOp::Wal(WalOp::Prune { source, up_to }) => {
                out.push(WAL_PRUNE);
                put(&mut out, source.as_bytes());
                out.extend_from_slice(&up_to.to_le_bytes());
            }
            WriteOp::Wal(WalOp::Delete { source }) => {
                out.push(WAL_DELETE);
                put(&mut out, source.as_bytes());
            }
            WriteOp::Sync | WriteOp::Import(_) => return None,
        }
    }
    out[..4].copy_from_slice(&count.to_le_bytes());
    Some(out)
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("journaled fields are below 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Decodes a record payload back into the ops [`encode`] took.
pub(crate) fn decode(payload: Bytes) -> Result<Vec<WriteOp>, String> {
    // Records were checked against the limits when they were first
    // written; a replay must not refuse them if the limits changed since.
    let unlimited = Limits {
        max_key_bytes: usize::MAX,
        max_value_bytes: usize::MAX,
        max_batch_entries: usize::MAX,
        max_body_bytes: usize::MAX,
    };
    let mut r = Cursor {
        buf: payload,
        at: 0,
    };
    let count = r.u32()?;
    let mut ops = Vec::with_capacity((count as usize).min(4096));
    for _ in 0..count {
        let op = match r.u8()? {
            SET => WriteOp::Set {
                store: r.string()?,
                key: r.string()?,
                value: r.bytes()?,
            },
            DELETE => WriteOp::Delete {
                store: r.string()?,
                key: r.string()?,
            },
            SET_MANY => WriteOp::SetMany {
                store: r.string()?,
                entries: EntriesFrame::decode(r.bytes()?, &unlimited).map_err(|e| e.to_string())?,
            },
            DELETE_MANY => WriteOp::DeleteMany {
                store: r.string()?,
                keys: KeysFrame::decode(r.bytes()?, &unlimited).map_err(|e| e.to_string())?,
            },
            CLEAR => WriteOp::Clear { store: r.string()? },
            WAL_REGISTER => WriteOp::Wal(WalOp::Register {
                source: r.string()?,
                config: WalConfig {
                    max_events: r.u64()?,
                    capacity_policy: match r.u8()? {
                        0 => WalCapacityPolicy::RejectIncoming,
                        1 => WalCapacityPolicy::OverwriteOldest,
                        other => return Err(format!("unknown capacity policy {other}")),
                    },
                },
            }),
            WAL_APPEND => WriteOp::Wal(WalOp::Append {
                source: r.string()?,
                append_id: match r.u8()? {
                    0 => None,
                    _ => Some(AppendId(u128::from_le_bytes(
                        r.take(16)?.as_ref().try_into().expect("16 bytes"),
                    ))),
                },
                event: r.bytes()?,
            }),
            WAL_PRUNE => WriteOp::Wal(WalOp::Prune {
                source: r.string()?,
                up_to: r.u64()?,
            }),
            WAL_DELETE => WriteOp::Wal(WalOp::Delete {
                source: r.string()?,
            }),
            other => return Err(format!("unknown op tag {other}")),
        };
        ops.push(op);
    }
    if r.at != r.buf.len() {
        return Err("trailing bytes after the last op".into());
    }
    Ok(ops)
}

struct Cursor {
    buf: Bytes,
    at: usize,
}

impl Cursor {
    fn take(&mut self, n: usize) -> Result<Bytes, String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| "record ends inside an op".to_string())?;
        let out = self.buf.slice(self.at..end);
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.as_ref().try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.as_ref().try_into().expect("8 bytes"),
        ))
    }

    fn bytes(&mut self) -> Result<Bytes, String> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| "a name is not UTF-8".to_string())
    }
}

#[cfg(test)]
mod tests;
