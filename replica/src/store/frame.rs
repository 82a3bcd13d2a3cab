//! On-disk encodings: the segment header and the entry frame. Pure functions,
//! no I/O.
//!
//! Segment header (32 bytes):
//! `magic "DLGSEG\0\x01" (8) | base index u64 | previous term u64 | reserved u32 | crc32c u32`
//! (little endian; the CRC covers bytes 0..28). The previous term is the term
//! of entry `base - 1`, so `term(first_index - 1)` is known after the segments
//! before it were deleted.
//!
//! Entry frame (28-byte header, then the payload):
//! `version u8 | kind u8 | reserved u16 | payload length u32 | index u64 | term u64 | crc32c u32`
//! The CRC covers header bytes 0..24 and the payload. A version byte of zero
//! is never valid, so zero-filled space (a crash after the file grew but
//! before its data reached the disk) never parses as an entry.

use bytes::Bytes;

use crate::entry::{Entry, EntryKind, Index, Term};

/// The frame format version written today.
pub const FRAME_VERSION: u8 = 1;
/// Bytes of an entry frame before its payload.
pub const FRAME_HEADER_BYTES: usize = 28;
/// Bytes of a segment file's header.
pub const SEGMENT_HEADER_BYTES: usize = 32;

const SEGMENT_MAGIC: [u8; 8] = *b"DLGSEG\0\x01";

/// The largest payload a frame may carry (the length field is a u32; keep
/// well below it so a frame always fits a segment's u32 offsets).
pub(crate) const MAX_PAYLOAD_BYTES: usize = 1 << 30;

/// A segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub base_index: Index,
    pub prev_term: Term,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut bytes = [0u8; SEGMENT_HEADER_BYTES];
        bytes[0..8].copy_from_slice(&SEGMENT_MAGIC);
        bytes[8..16].copy_from_slice(&self.base_index.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.prev_term.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[0..28]);
        bytes[28..32].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    pub fn decode(bytes: &[u8; SEGMENT_HEADER_BYTES]) -> Result<SegmentHeader, &'static str> {
        if bytes[0..8] != SEGMENT_MAGIC {
            return Err("bad segment magic");
        }
        if crc32c::crc32c(&bytes[0..28]) != read_u32(bytes, 28) {
            return Err("segment header CRC mismatch");
        }
        Ok(SegmentHeader {
            base_index: read_u64(bytes, 8),
            prev_term: read_u64(bytes, 16),
        })
    }
}

/// The fields of a frame header, before its payload is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub kind: EntryKind,
    pub payload_bytes: usize,
    pub index: Index,
    pub term: Term,
    pub crc: u32,
}

impl FrameHeader {
    /// The frame's total size.
    pub fn frame_bytes(&self) -> usize {
        FRAME_HEADER_BYTES + self.payload_bytes
    }
}

/// The bytes `entry` takes on disk.
pub(crate) fn frame_bytes(entry: &Entry) -> usize {
    FRAME_HEADER_BYTES + entry.payload.len()
}

/// Appends the frame of `entry` to `out`.
///
/// # Panics
/// If the payload exceeds [`MAX_PAYLOAD_BYTES`]; callers check first.
pub(crate) fn encode_frame(entry: &Entry, out: &mut Vec<u8>) {
    assert!(
        entry.payload.len() <= MAX_PAYLOAD_BYTES,
        "payload of entry {} is {} bytes, above the checked maximum",
        entry.index,
        entry.payload.len()
    );
    let start = out.len();
    out.push(FRAME_VERSION);
    out.push(entry.kind.code());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(entry.payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&entry.index.to_le_bytes());
    out.extend_from_slice(&entry.term.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[start..]), &entry.payload);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&entry.payload);
}

/// Parses a frame header without checking the CRC (that needs the payload).
pub(crate) fn decode_header(bytes: &[u8]) -> Result<FrameHeader, &'static str> {
    if bytes.len() < FRAME_HEADER_BYTES {
        return Err("truncated frame header");
    }
    if bytes[0] != FRAME_VERSION {
        return Err("unknown frame version");
    }
    let kind = EntryKind::from_code(bytes[1]).ok_or("unknown entry kind")?;
    if bytes[2] != 0 || bytes[3] != 0 {
        return Err("reserved header bytes are not zero");
    }
    let payload_bytes = read_u32(bytes, 4) as usize;
    if payload_bytes > MAX_PAYLOAD_BYTES {
        return Err("payload length out of range");
    }
    Ok(FrameHeader {
        kind,
        payload_bytes,
        index: read_u64(bytes, 8),
        term: read_u64(bytes, 16),
        crc: read_u32(bytes, 24),
    })
}

/// Checks the CRC of a frame whose header was parsed from `header_bytes` and
/// whose payload is `payload`.
pub(crate) fn crc_matches(header: &FrameHeader, header_bytes: &[u8], payload: &[u8]) -> bool {
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header_bytes[0..24]), payload);
    crc == header.crc
}

/// Decodes and verifies the whole frame at the start of `frame`, which must
/// hold at least the full frame. The payload shares `frame`'s buffer.
pub(crate) fn decode_frame(frame: &Bytes) -> Result<(Entry, usize), &'static str> {
    let header = decode_header(frame)?;
    let total = header.frame_bytes();
    if frame.len() < total {
        return Err("truncated frame payload");
    }
    let payload = frame.slice(FRAME_HEADER_BYTES..total);
    if !crc_matches(&header, frame, &payload) {
        return Err("frame CRC mismatch");
    }
    let entry = Entry {
        index: header.index,
        term: header.term,
        kind: header.kind,
        payload,
    };
    Ok((entry, total))
}

pub(crate) fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

pub(crate) fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trips_and_detects_every_flipped_bit() {
        let entry = Entry {
            index: 7,
            term: 3,
            kind: EntryKind::Configuration,
            payload: Bytes::from_static(b"hello"),
        };
        let mut out = Vec::new();
        encode_frame(&entry, &mut out);
        assert_eq!(out.len(), frame_bytes(&entry));
        let bytes = Bytes::from(out.clone());
        let (decoded, used) = decode_frame(&bytes).expect("valid frame");
        assert_eq!(decoded, entry);
        assert_eq!(used, out.len());
        for bit in 0..out.len() * 8 {
            let mut damaged = out.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_frame(&Bytes::from(damaged)).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn segment_header_round_trips_and_rejects_damage() {
        let header = SegmentHeader {
            base_index: 42,
            prev_term: 9,
        };
        let mut bytes = header.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
        bytes[10] ^= 1;
        assert!(SegmentHeader::decode(&bytes).is_err());
    }

    #[test]
    fn zero_filled_space_is_not_a_frame() {
        assert_eq!(
            decode_header(&[0u8; FRAME_HEADER_BYTES]),
            Err("unknown frame version")
        );
    }
}
