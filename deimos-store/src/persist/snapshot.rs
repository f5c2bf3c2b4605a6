//! Snapshots as a byte stream that can be produced, sent and installed in chunks.
//!
//! Why a stream: the applied records can be large, and a follower that is far behind must be
//! caught up without the leader or the follower holding the whole image twice. The encoder reads
//! the records lazily from one redb read transaction (a consistent point-in-time view, which the
//! writer never blocks), and the installer writes records into one redb write transaction as
//! chunks arrive; only a partial frame is ever buffered.
//!
//! Stream layout (all integers little-endian):
//! ```text
//! stream  := "DEIMOSNP" header record* trailer
//! frame   := len:u32 tag:u8 body          (len counts tag + body)
//! header  := frame tag 1, body = postcard { version: u32, meta: SnapshotMeta }
//! record  := frame tag 2, body = key_len:u32 key(UTF-8) value
//! trailer := frame tag 3, body = postcard { records: u64, checksum: u64 }
//! ```
//! Records appear in strictly increasing key order. `checksum` is FNV-1a 64 over every byte
//! before the trailer. The decoder checks all of this, so truncation, duplication, reordering or
//! corruption is an error, never a silently partial state.

use serde::{Deserialize, Serialize};

use deimos_raft::types::SnapshotMeta;
use redb::ReadTransaction;

use super::codec::{decode, encode, Fnv64, SNAPSHOT_FORMAT_VERSION};
use super::error::{backend, corrupt, PersistError};
use super::schema::{AppliedState, APPLIED, KEY_APPLIED, RECORDS};
use super::store::RedbStorage;

const STREAM_MAGIC: &[u8; 8] = b"DEIMOSNP";
const TAG_HEADER: u8 = 1;
const TAG_RECORD: u8 = 2;
const TAG_TRAILER: u8 = 3;
/// Upper bound of one frame; guards against a corrupt length making us wait forever.
pub const MAX_FRAME: usize = 256 << 20;
/// Default chunk size of [`RedbStorage::snapshot_encoder`] users.
pub const DEFAULT_CHUNK: usize = 1 << 20;

#[derive(Serialize, Deserialize)]
struct Header {
    version: u32,
    meta: SnapshotMeta,
}

#[derive(Serialize, Deserialize)]
struct Trailer {
    records: u64,
    checksum: u64,
}

type RecordRange = redb::Range<'static, &'static [u8], &'static [u8]>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Header,
    Records,
    Trailer,
    Done,
}

/// Produces the snapshot stream of the applied state, `chunk_size` bytes at a time (the last
/// chunk may be shorter). An `Iterator` of `Result<chunk>`; after an error it ends.
///
/// It holds a redb read transaction: while it lives, pages that later commits free cannot be
/// reused, so the file may grow during a long transfer. Drop it when the transfer ends.
pub struct SnapshotEncoder {
    meta: SnapshotMeta,
    records: RecordRange,
    stage: Stage,
    out: FrameWriter,
    chunk_size: usize,
    // Declared last so it is dropped after the range that reads from it.
    _txn: ReadTransaction,
}

impl RedbStorage {
    /// Start streaming a snapshot of the applied state as of now. Writes may continue meanwhile;
    /// the stream keeps showing the state at this call.
    pub fn snapshot_encoder(&self, chunk_size: usize) -> Result<SnapshotEncoder, PersistError> {
        let txn = self.begin_read()?;
        let applied: AppliedState = {
            let t = txn
                .open_table(APPLIED)
                .map_err(|e| backend("open applied", e))?;
            let v = t.get(KEY_APPLIED).map_err(|e| backend("read applied", e))?;
            let v = v.ok_or_else(|| corrupt("applied-state record missing"))?;
            decode(v.value(), "applied")?
        };
        let records = txn
            .open_table(RECORDS)
            .map_err(|e| backend("open records", e))?
            .range::<&[u8]>(..)
            .map_err(|e| backend("scan records", e))?;
        let meta = SnapshotMeta {
            index: applied.index,
            term: applied.term,
            conf: applied.conf,
        };
        Ok(SnapshotEncoder {
            meta,
            records,
            stage: Stage::Header,
            out: FrameWriter::new(),
            chunk_size: chunk_size.max(1),
            _txn: txn,
        })
    }
}

impl SnapshotEncoder {
    /// The metadata this stream carries (also inside its header).
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    fn step(&mut self) -> Result<(), PersistError> {
        match self.stage {
            Stage::Header => {
                self.out.header(&self.meta)?;
                self.stage = Stage::Records;
            }
            Stage::Records => match self.records.next() {
                Some(Ok((k, v))) => self.out.record(k.value(), v.value())?,
                Some(Err(e)) => return Err(backend("scan records", e).into()),
                None => self.stage = Stage::Trailer,
            },
            Stage::Trailer => {
                self.out.trailer()?;
                self.stage = Stage::Done;
            }
            Stage::Done => {}
        }
        Ok(())
    }
}

impl Iterator for SnapshotEncoder {
    type Item = Result<Vec<u8>, PersistError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let buf = &mut self.out.buf;
            if buf.len() >= self.chunk_size || (self.stage == Stage::Done && !buf.is_empty()) {
                let rest = if buf.len() > self.chunk_size {
                    buf.split_off(self.chunk_size)
                } else {
                    Vec::new()
                };
                return Some(Ok(std::mem::replace(buf, rest)));
            }
            if self.stage == Stage::Done {
                return None;
            }
            if let Err(e) = self.step() {
                self.stage = Stage::Done;
                self.out.buf.clear();
                return Some(Err(e));
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DStage {
    Magic,
    Header,
    Records,
    Done,
    Failed,
}

/// Parses a snapshot stream fed in arbitrary chunks, handing each record to a callback as soon as
/// it is complete. Holds at most one partial frame.
#[derive(Debug)]
pub struct SnapshotDecoder {
    buf: Vec<u8>,
    stage: DStage,
    meta: Option<SnapshotMeta>,
    hasher: Fnv64,
    count: u64,
    last_key: Option<Vec<u8>>,
}

impl Default for SnapshotDecoder {
    fn default() -> Self {
        Self::new()
    }
}

fn bad(what: impl Into<String>) -> PersistError {
    PersistError::Snapshot(what.into())
}

impl SnapshotDecoder {
    pub fn new() -> Self {
        SnapshotDecoder {
            buf: Vec::new(),
            stage: DStage::Magic,
            meta: None,
            hasher: Fnv64::new(),
            count: 0,
            last_key: None,
        }
    }

    /// Metadata from the stream header, once it has been received.
    pub fn meta(&self) -> Option<&SnapshotMeta> {
        self.meta.as_ref()
    }

    /// Feed the next chunk. `on_record` receives each complete record in key order. After an
    /// error (from the stream or from `on_record`) the decoder refuses further input.
    pub fn push(
        &mut self,
        chunk: &[u8],
        mut on_record: impl FnMut(String, Vec<u8>) -> Result<(), PersistError>,
    ) -> Result<(), PersistError> {
        if self.stage == DStage::Failed {
            return Err(bad("decoder already failed"));
        }
        self.buf.extend_from_slice(chunk);
        let r = self.parse(&mut on_record);
        if r.is_err() {
            self.stage = DStage::Failed;
            self.buf = Vec::new();
        }
        r
    }

    fn parse(
        &mut self,
        on_record: &mut impl FnMut(String, Vec<u8>) -> Result<(), PersistError>,
    ) -> Result<(), PersistError> {
        let mut buf = std::mem::take(&mut self.buf);
        let mut pos = 0usize;
        let result = loop {
            let avail = &buf[pos..];
            match self.stage {
                DStage::Failed => break Err(bad("decoder already failed")),
                DStage::Done if avail.is_empty() => break Ok(()),
                DStage::Done => break Err(bad(format!("{} bytes after the trailer", avail.len()))),
                DStage::Magic => {
                    if avail.len() < STREAM_MAGIC.len() {
                        if !STREAM_MAGIC.starts_with(avail) {
                            break Err(bad("not a Deimos snapshot stream (bad magic)"));
                        }
                        break Ok(());
                    }
                    if &avail[..STREAM_MAGIC.len()] != STREAM_MAGIC {
                        break Err(bad("not a Deimos snapshot stream (bad magic)"));
                    }
                    self.hasher.update(STREAM_MAGIC);
                    pos += STREAM_MAGIC.len();
                    self.stage = DStage::Header;
                }
                DStage::Header | DStage::Records => {
                    let Some(len_bytes) = avail.get(..4) else {
                        break Ok(());
                    };
                    let mut lb = [0u8; 4];
                    lb.copy_from_slice(len_bytes);
                    let len = u32::from_le_bytes(lb) as usize;
                    if len == 0 || len > MAX_FRAME {
                        break Err(bad(format!("frame length {len} out of range")));
                    }
                    let Some(frame) = avail.get(..4 + len) else {
                        break Ok(());
                    };
                    let (tag, body) = (frame[4], &frame[5..]);
                    if let Err(e) = self.frame(tag, frame, body, on_record) {
                        break Err(e);
                    }
                    pos += 4 + len;
                }
            }
        };
        buf.drain(..pos.min(buf.len()));
        self.buf = buf;
        result
    }

    fn frame(
        &mut self,
        tag: u8,
        frame: &[u8],
        body: &[u8],
        on_record: &mut impl FnMut(String, Vec<u8>) -> Result<(), PersistError>,
    ) -> Result<(), PersistError> {
        match (self.stage, tag) {
            (DStage::Header, TAG_HEADER) => {
                let h: Header = decode(body, "snapshot header").map_err(|e| bad(e.to_string()))?;
                if h.version != SNAPSHOT_FORMAT_VERSION {
                    return Err(bad(format!(
                        "format version {} (this build reads {SNAPSHOT_FORMAT_VERSION})",
                        h.version
                    )));
                }
                self.hasher.update(frame);
                self.meta = Some(h.meta);
                self.stage = DStage::Records;
            }
            (DStage::Records, TAG_RECORD) => {
                let Some(kl) = body.get(..4) else {
                    return Err(bad("short record frame"));
                };
                let mut kb = [0u8; 4];
                kb.copy_from_slice(kl);
                let klen = u32::from_le_bytes(kb) as usize;
                let Some(key) = body.get(4..4 + klen) else {
                    return Err(bad("record key runs past its frame"));
                };
                if self.last_key.as_deref().is_some_and(|last| last >= key) {
                    return Err(bad("records out of order or duplicated"));
                }
                let key_s =
                    String::from_utf8(key.to_vec()).map_err(|_| bad("record key is not UTF-8"))?;
                let value = body[4 + klen..].to_vec();
                self.hasher.update(frame);
                self.last_key = Some(key.to_vec());
                self.count += 1;
                on_record(key_s, value)?;
            }
            (DStage::Records, TAG_TRAILER) => {
                let t: Trailer =
                    decode(body, "snapshot trailer").map_err(|e| bad(e.to_string()))?;
                if t.records != self.count {
                    return Err(bad(format!(
                        "trailer says {} records, stream had {}",
                        t.records, self.count
                    )));
                }
                if t.checksum != self.hasher.finish() {
                    return Err(bad("checksum mismatch"));
                }
                self.stage = DStage::Done;
            }
            (stage, tag) => {
                return Err(bad(format!(
                    "unexpected frame tag {tag} in stage {stage:?}"
                )))
            }
        }
        Ok(())
    }

    /// The stream's checksum (FNV-1a 64, see the module docs) over what has been received so
    /// far; once [`is_complete`](Self::is_complete), the verified checksum of the whole stream.
    pub fn checksum(&self) -> u64 {
        self.hasher.finish()
    }

    /// Records received so far.
    pub fn records(&self) -> u64 {
        self.count
    }

    /// True once the trailer has been received and verified.
    pub fn is_complete(&self) -> bool {
        self.stage == DStage::Done
    }

    /// End of input: the stream must have been complete. Returns its metadata.
    pub fn finish(self) -> Result<SnapshotMeta, PersistError> {
        match (self.stage, self.meta) {
            (DStage::Done, Some(meta)) if self.buf.is_empty() => Ok(meta),
            (DStage::Failed, _) => Err(bad("decoder failed earlier")),
            _ => Err(bad("stream ended early (truncated)")),
        }
    }
}

/// Applied records as `(key, value)` pairs in key order.
pub type Records = Vec<(String, Vec<u8>)>;

/// Check a whole snapshot stream held in memory — framing, key order, record count, checksum,
/// trailer — without keeping its records, and return the metadata it carries. What a receiver
/// does before it lets Raft install a snapshot: a damaged one is refused there instead of
/// failing the install, which would stop the node.
pub fn check_snapshot_data(data: &[u8]) -> Result<SnapshotMeta, PersistError> {
    let mut d = SnapshotDecoder::new();
    d.push(data, |_, _| Ok(()))?;
    d.finish()
}

/// Decode a whole snapshot stream held in memory (e.g. `Snapshot::data`).
pub fn decode_snapshot_data(data: &[u8]) -> Result<(SnapshotMeta, Records), PersistError> {
    let mut out = Vec::new();
    let mut d = SnapshotDecoder::new();
    d.push(data, |k, v| {
        out.push((k, v));
        Ok(())
    })?;
    Ok((d.finish()?, out))
}

/// Encode a snapshot stream from records given in memory, in strictly increasing key order.
/// For tests and tools; the server streams from the store with [`RedbStorage::snapshot_encoder`].
pub fn encode_snapshot_data(
    meta: &SnapshotMeta,
    records: &[(String, Vec<u8>)],
) -> Result<Vec<u8>, PersistError> {
    if records.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(bad("records must be in strictly increasing key order"));
    }
    let mut w = FrameWriter::new();
    w.header(meta)?;
    for (k, v) in records {
        w.record(k.as_bytes(), v)?;
    }
    w.trailer()?;
    Ok(w.buf)
}

/// Builds a snapshot stream record by record, handing out its bytes as they are produced, so
/// a stream can be rewritten (a backup restored with a new membership) without holding it.
pub struct SnapshotWriter {
    w: FrameWriter,
    last_key: Option<String>,
}

impl SnapshotWriter {
    /// Start a stream for `meta` (its header is the first bytes [`take`](Self::take) returns).
    pub fn new(meta: &SnapshotMeta) -> Result<Self, PersistError> {
        let mut w = FrameWriter::new();
        w.header(meta)?;
        Ok(SnapshotWriter { w, last_key: None })
    }

    /// Append a record; keys must come in strictly increasing order, as the decoder demands.
    pub fn record(&mut self, key: &str, value: &[u8]) -> Result<(), PersistError> {
        if self.last_key.as_deref().is_some_and(|last| last >= key) {
            return Err(bad("records must be in strictly increasing key order"));
        }
        self.w.record(key.as_bytes(), value)?;
        self.last_key = Some(key.to_string());
        Ok(())
    }

    /// Bytes produced and not yet taken.
    pub fn pending(&self) -> usize {
        self.w.buf.len()
    }

    /// Take the bytes produced so far.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.w.buf)
    }

    /// End the stream: the remaining bytes, trailer included.
    pub fn finish(mut self) -> Result<Vec<u8>, PersistError> {
        self.w.trailer()?;
        Ok(self.w.buf)
    }
}

/// Appends frames to a buffer, keeping the running checksum and record count.
struct FrameWriter {
    buf: Vec<u8>,
    hasher: Fnv64,
    count: u64,
}

impl FrameWriter {
    fn new() -> Self {
        FrameWriter {
            buf: Vec::new(),
            hasher: Fnv64::new(),
            count: 0,
        }
    }

    fn frame(&mut self, tag: u8, parts: &[&[u8]], hashed: bool) -> Result<(), PersistError> {
        let body_len: usize = parts.iter().map(|p| p.len()).sum();
        let len = u32::try_from(body_len + 1)
            .ok()
            .filter(|l| (*l as usize) <= MAX_FRAME)
            .ok_or_else(|| bad(format!("frame of {body_len} bytes too large")))?;
        let start = self.buf.len();
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.push(tag);
        for p in parts {
            self.buf.extend_from_slice(p);
        }
        if hashed {
            self.hasher.update(&self.buf[start..]);
        }
        Ok(())
    }

    fn header(&mut self, meta: &SnapshotMeta) -> Result<(), PersistError> {
        self.buf.extend_from_slice(STREAM_MAGIC);
        self.hasher.update(STREAM_MAGIC);
        let h = encode(&Header {
            version: SNAPSHOT_FORMAT_VERSION,
            meta: meta.clone(),
        })?;
        self.frame(TAG_HEADER, &[&h], true)
    }

    fn record(&mut self, key: &[u8], value: &[u8]) -> Result<(), PersistError> {
        let klen = u32::try_from(key.len()).map_err(|_| bad("record key too long"))?;
        self.frame(TAG_RECORD, &[&klen.to_le_bytes(), key, value], true)?;
        self.count += 1;
        Ok(())
    }

    fn trailer(&mut self) -> Result<(), PersistError> {
        let t = encode(&Trailer {
            records: self.count,
            checksum: self.hasher.finish(),
        })?;
        self.frame(TAG_TRAILER, &[&t], false)
    }
}
