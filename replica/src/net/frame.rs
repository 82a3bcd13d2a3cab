//! Framing of the binary protocol on port 20911: a fixed header, then a body.
//!
//! # Wire layout (a contract)
//!
//! Every frame is a 20-byte header followed by `body_len` bytes of body. All
//! integers are big-endian.
//!
//! | offset | size | field        | meaning                                             |
//! |-------:|-----:|--------------|-----------------------------------------------------|
//! | 0      | 4    | `magic`      | the ASCII bytes `DLGR` (`0x44 0x4C 0x47 0x52`)      |
//! | 4      | 1    | `version`    | protocol version the frame is written in (`1`; a version-2 `HelloOk` says `2`) |
//! | 5      | 1    | `frame_type` | see [`FrameType`]                                   |
//! | 6      | 2    | `flags`      | no flag is defined yet: must be zero                |
//! | 8      | 8    | `request_id` | matches a client response to its request; 0 else    |
//! | 16     | 4    | `body_len`   | body length in bytes, at most the configured maximum |
//! | 20     | …    | body         | depends on `frame_type`                             |
//!
//! The magic and version bytes keep their place in every future version, and
//! the bodies of `Hello` and `Error` frames are frozen (see
//! [`handshake`](super::handshake)), so a peer can always tell the other side
//! which versions it speaks.
//!
//! The decoder checks the whole header, including `body_len` against the
//! maximum, *before* it reserves room for the body: a hostile length costs
//! nothing. It never panics; every bad input maps to one [`FrameError`].

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// The four bytes every frame starts with.
pub const MAGIC: [u8; 4] = *b"DLGR";
/// Size of the fixed header in bytes.
pub const HEADER_BYTES: usize = 20;
/// The protocol versions this build speaks, lowest and highest. Version 2
/// differs from 1 in the `HelloOk` body alone (it carries the group id; see
/// [`handshake`](super::handshake)).
pub const SUPPORTED_VERSIONS: (u8, u8) = (1, 2);
/// The version frames are written in: every frame reads the same in both
/// versions but a version-2 `HelloOk`, written as 2 to a peer that speaks it.
pub const PROTOCOL_VERSION: u8 = 1;
/// What a message needs the receiving peer to speak: a peer of an older
/// build cannot decode the kinds added after version 1, so the link does
/// not send them to it (see `outbound`).
pub trait WireVersion {
    /// The lowest protocol version that has this message.
    fn wire_version(&self) -> u8 {
        PROTOCOL_VERSION
    }
}

/// Default largest body accepted or sent: 16 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 16 * 1024 * 1024;

/// What a frame carries. The codes are part of the wire contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// First frame from the connecting side: who it is and what it speaks.
    Hello = 1,
    /// The accepting side's answer to a good `Hello`.
    HelloOk = 2,
    /// A fatal error; the sender closes the connection after it.
    Error = 3,
    /// One consensus message between members.
    Peer = 4,
    /// A client request; `request_id` chosen by the client.
    Request = 5,
    /// The answer to the client request with the same `request_id`.
    Response = 6,
}

impl FrameType {
    /// The frame type under `code`, if any.
    pub fn from_code(code: u8) -> Option<FrameType> {
        match code {
            1 => Some(FrameType::Hello),
            2 => Some(FrameType::HelloOk),
            3 => Some(FrameType::Error),
            4 => Some(FrameType::Peer),
            5 => Some(FrameType::Request),
            6 => Some(FrameType::Response),
            _ => None,
        }
    }

    /// The code this frame type is written under.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The protocol version it was written in.
    pub version: u8,
    /// What the body holds.
    pub frame_type: FrameType,
    /// Matches responses to requests; zero where unused.
    pub request_id: u64,
    /// The body, interpreted according to `frame_type`.
    pub body: Bytes,
}

impl Frame {
    /// A frame of the current version.
    pub fn new(frame_type: FrameType, request_id: u64, body: impl Into<Bytes>) -> Frame {
        Frame {
            version: PROTOCOL_VERSION,
            frame_type,
            request_id,
            body: body.into(),
        }
    }
}

/// Why bytes could not be read or written as a frame. Each kind of bad input
/// has its own variant so callers (and tests) can tell them apart.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The first four bytes are not `DLGR`: not our protocol.
    #[error("bad magic {got:02x?}: not a DLedger frame (expected \"DLGR\")")]
    BadMagic {
        /// The four bytes found.
        got: [u8; 4],
    },
    /// The frame is written in a version this build does not speak.
    #[error("unsupported protocol version {got}; this build speaks {min}..={max}")]
    UnsupportedVersion {
        /// The version in the header.
        got: u8,
        /// Lowest version spoken here.
        min: u8,
        /// Highest version spoken here.
        max: u8,
    },
    /// The frame type code is not one of [`FrameType`].
    #[error("unknown frame type {code}")]
    UnknownFrameType {
        /// The code in the header.
        code: u8,
    },
    /// Flag bits are set that no version defines.
    #[error("unknown flags {flags:#06x}")]
    UnknownFlags {
        /// The flags in the header.
        flags: u16,
    },
    /// The body is longer than the configured maximum.
    #[error("frame body of {body_bytes} bytes exceeds the maximum of {max_bytes} bytes")]
    TooLarge {
        /// The announced (or attempted) body length.
        body_bytes: u64,
        /// The configured maximum.
        max_bytes: u32,
    },
    /// The stream ended inside a frame.
    #[error("connection closed inside a frame: {got_bytes} of {expected_bytes} bytes received")]
    Truncated {
        /// Bytes the frame needs (header, or header plus body once known).
        expected_bytes: usize,
        /// Bytes that arrived.
        got_bytes: usize,
    },
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// The header fields, parsed and validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    version: u8,
    frame_type: FrameType,
    request_id: u64,
    body_bytes: u32,
}

/// Encoder and decoder of [`Frame`]s for `tokio_util::codec::Framed`.
#[derive(Clone, Copy, Debug)]
pub struct FrameCodec {
    max_frame_bytes: u32,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl FrameCodec {
    /// A codec refusing bodies longer than `max_frame_bytes`.
    pub fn new(max_frame_bytes: u32) -> FrameCodec {
        FrameCodec { max_frame_bytes }
    }

    /// The largest body this codec accepts or writes.
    pub fn max_frame_bytes(&self) -> u32 {
        self.max_frame_bytes
    }

    fn parse_header(&self, header: &[u8]) -> Result<Header, FrameError> {
        assert!(
            header.len() >= HEADER_BYTES,
            "parse_header needs a whole header"
        );
        let mut magic = [0u8; 4];
        magic.copy_from_slice(&header[0..4]);
        if magic != MAGIC {
            return Err(FrameError::BadMagic { got: magic });
        }
        let mut rest = &header[4..HEADER_BYTES];
        let version = rest.get_u8();
        let (min, max) = SUPPORTED_VERSIONS;
        if version < min || version > max {
            return Err(FrameError::UnsupportedVersion {
                got: version,
                min,
                max,
            });
        }
        let code = rest.get_u8();
        let frame_type = FrameType::from_code(code).ok_or(FrameError::UnknownFrameType { code })?;
        let flags = rest.get_u16();
        if flags != 0 {
            return Err(FrameError::UnknownFlags { flags });
        }
        let request_id = rest.get_u64();
        let body_bytes = rest.get_u32();
        if body_bytes > self.max_frame_bytes {
            return Err(FrameError::TooLarge {
                body_bytes: u64::from(body_bytes),
                max_bytes: self.max_frame_bytes,
            });
        }
        Ok(Header {
            version,
            frame_type,
            request_id,
            body_bytes,
        })
    }

    /// Writes `frame` to `dst`; the encoder's body, usable without `Framed`.
    pub fn encode_into(&self, frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let body_bytes = self.check_body_len(frame.body.len())?;
        dst.reserve(HEADER_BYTES + frame.body.len());
        dst.put_slice(&MAGIC);
        dst.put_u8(frame.version);
        dst.put_u8(frame.frame_type.code());
        dst.put_u16(0);
        dst.put_u64(frame.request_id);
        dst.put_u32(body_bytes);
        dst.put_slice(&frame.body);
        Ok(())
    }

    /// A frame from `buf`, which holds [`HEADER_BYTES`] of room and then the
    /// body: the header is written into the room, so a body serialized
    /// straight into `buf` is never copied again.
    pub fn seal(
        &self,
        frame_type: FrameType,
        version: u8,
        request_id: u64,
        mut buf: Vec<u8>,
    ) -> Result<Bytes, FrameError> {
        let body_len = buf.len().saturating_sub(HEADER_BYTES);
        let body_bytes = self.check_body_len(body_len)?;
        if buf.len() < HEADER_BYTES {
            buf.resize(HEADER_BYTES, 0);
        }
        let mut header = &mut buf[..HEADER_BYTES];
        header.put_slice(&MAGIC);
        header.put_u8(version);
        header.put_u8(frame_type.code());
        header.put_u16(0);
        header.put_u64(request_id);
        header.put_u32(body_bytes);
        Ok(Bytes::from(buf))
    }

    /// One frame's bytes, header and body.
    pub fn encode_to_bytes(&self, frame: &Frame) -> Result<Bytes, FrameError> {
        let mut dst = BytesMut::with_capacity(HEADER_BYTES + frame.body.len());
        self.encode_into(frame, &mut dst)?;
        Ok(dst.freeze())
    }

    fn check_body_len(&self, len: usize) -> Result<u32, FrameError> {
        match u32::try_from(len) {
            Ok(n) if n <= self.max_frame_bytes => Ok(n),
            _ => Err(FrameError::TooLarge {
                body_bytes: len as u64,
                max_bytes: self.max_frame_bytes,
            }),
        }
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        // Validate what we can of the magic early, so garbage is refused
        // after four bytes rather than after waiting for a whole header.
        let prefix = src.len().min(MAGIC.len());
        if src[..prefix] != MAGIC[..prefix] {
            let mut got = [0u8; 4];
            got[..prefix].copy_from_slice(&src[..prefix]);
            return Err(FrameError::BadMagic { got });
        }
        if src.len() < HEADER_BYTES {
            src.reserve(HEADER_BYTES - src.len());
            return Ok(None);
        }
        let header = self.parse_header(&src[..HEADER_BYTES])?;
        let total = HEADER_BYTES + header.body_bytes as usize;
        if src.len() < total {
            // Safe to reserve: `body_bytes` was checked against the maximum.
            src.reserve(total - src.len());
            return Ok(None);
        }
        let mut whole = src.split_to(total);
        whole.advance(HEADER_BYTES);
        Ok(Some(Frame {
            version: header.version,
            frame_type: header.frame_type,
            request_id: header.request_id,
            body: whole.freeze(),
        }))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => {
                let expected_bytes = if src.len() < HEADER_BYTES {
                    HEADER_BYTES
                } else {
                    // The header parsed in `decode`, so this cannot fail.
                    let header = self.parse_header(&src[..HEADER_BYTES])?;
                    HEADER_BYTES + header.body_bytes as usize
                };
                Err(FrameError::Truncated {
                    expected_bytes,
                    got_bytes: src.len(),
                })
            }
        }
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode_into(&frame, dst)
    }
}

/// Already-encoded frames (see [`FrameCodec::encode_to_bytes`]) pass through.
impl Encoder<Bytes> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, encoded: Bytes, dst: &mut BytesMut) -> Result<(), FrameError> {
        dst.extend_from_slice(&encoded);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TYPES: [FrameType; 6] = [
        FrameType::Hello,
        FrameType::HelloOk,
        FrameType::Error,
        FrameType::Peer,
        FrameType::Request,
        FrameType::Response,
    ];

    fn encoded(frame: &Frame) -> BytesMut {
        let mut dst = BytesMut::new();
        FrameCodec::default().encode_into(frame, &mut dst).unwrap();
        dst
    }

    #[test]
    fn a_sealed_buffer_is_the_frame_encode_into_writes() {
        let codec = FrameCodec::new(8);
        let mut buf = vec![0xAA; HEADER_BYTES];
        buf.extend_from_slice(b"body");
        let sealed = codec.seal(FrameType::Peer, 2, 77, buf).unwrap();
        let mut frame = Frame::new(FrameType::Peer, 77, Bytes::from_static(b"body"));
        frame.version = 2;
        assert_eq!(&sealed[..], &encoded(&frame)[..]);
        let mut too_big = vec![0; HEADER_BYTES];
        too_big.extend_from_slice(b"nine byte");
        assert!(matches!(
            codec.seal(FrameType::Peer, 1, 0, too_big),
            Err(FrameError::TooLarge {
                body_bytes: 9,
                max_bytes: 8
            })
        ));
    }

    fn decode_all(codec: &mut FrameCodec, bytes: &[u8]) -> Result<Vec<Frame>, FrameError> {
        let mut src = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Some(frame) = codec.decode_eof(&mut src)? {
            frames.push(frame);
        }
        Ok(frames)
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        (
            0..TYPES.len(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(t, id, body)| Frame::new(TYPES[t], id, body))
    }

    #[test]
    fn header_layout_matches_the_documented_contract() {
        let frame = Frame::new(FrameType::Request, 0x0102030405060708, &b"xyz"[..]);
        let bytes = encoded(&frame);
        assert_eq!(
            &bytes[..],
            &[
                b'D', b'L', b'G', b'R', 1, 5, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 3, b'x', b'y',
                b'z'
            ][..]
        );
    }

    #[test]
    fn bad_magic_is_refused_after_the_first_wrong_byte() {
        let mut src = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        let err = FrameCodec::default().decode(&mut src).unwrap_err();
        assert!(
            matches!(err, FrameError::BadMagic { got } if &got == b"GET "),
            "{err}"
        );
        let mut src = BytesMut::from(&b"DX"[..]);
        let err = FrameCodec::default().decode(&mut src).unwrap_err();
        assert!(matches!(err, FrameError::BadMagic { .. }), "{err}");
    }

    #[test]
    fn unknown_type_flags_and_version_have_their_own_errors() {
        let base = encoded(&Frame::new(FrameType::Peer, 1, &b"a"[..]));
        let mut bytes = base.clone();
        bytes[5] = 77;
        let err = decode_all(&mut FrameCodec::default(), &bytes).unwrap_err();
        assert!(
            matches!(err, FrameError::UnknownFrameType { code: 77 }),
            "{err}"
        );
        let mut bytes = base.clone();
        bytes[7] = 1;
        let err = decode_all(&mut FrameCodec::default(), &bytes).unwrap_err();
        assert!(
            matches!(err, FrameError::UnknownFlags { flags: 1 }),
            "{err}"
        );
        let mut bytes = base.clone();
        bytes[4] = 9;
        let err = decode_all(&mut FrameCodec::default(), &bytes).unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::UnsupportedVersion {
                    got: 9,
                    min: 1,
                    max: 2
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("speaks 1..=2"));
    }

    #[test]
    fn oversized_length_is_refused_from_the_header_alone() {
        let mut codec = FrameCodec::new(1024);
        let mut header = encoded(&Frame::new(FrameType::Peer, 0, Bytes::new()));
        header[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
        let capacity_before = header.capacity();
        let err = codec.decode(&mut header).unwrap_err();
        assert!(
            matches!(err, FrameError::TooLarge { body_bytes, max_bytes: 1024 } if body_bytes == u64::from(u32::MAX)),
            "{err}"
        );
        assert_eq!(
            header.capacity(),
            capacity_before,
            "nothing reserved for a refused frame"
        );
        // Exactly the maximum is fine.
        let frame = Frame::new(FrameType::Peer, 0, vec![7u8; 1024]);
        assert_eq!(
            decode_all(&mut codec, &encoded(&frame)).unwrap(),
            vec![frame]
        );
    }

    #[test]
    fn encoder_refuses_bodies_past_the_maximum() {
        let codec = FrameCodec::new(8);
        let err = codec
            .encode_to_bytes(&Frame::new(FrameType::Peer, 0, vec![0u8; 9]))
            .unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::TooLarge {
                    body_bytes: 9,
                    max_bytes: 8
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn truncation_at_every_offset_is_reported_at_eof() {
        let bytes = encoded(&Frame::new(FrameType::Response, 42, vec![1u8; 40]));
        for cut in 1..bytes.len() {
            let err = decode_all(&mut FrameCodec::default(), &bytes[..cut]).unwrap_err();
            let expected = if cut < HEADER_BYTES {
                HEADER_BYTES
            } else {
                bytes.len()
            };
            assert!(
                matches!(err, FrameError::Truncated { expected_bytes, got_bytes }
                    if expected_bytes == expected && got_bytes == cut),
                "cut at {cut}: {err}"
            );
        }
        assert!(decode_all(&mut FrameCodec::default(), &[])
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_frame_split_anywhere_decodes_once_complete() {
        let frame = Frame::new(FrameType::Peer, 3, vec![9u8; 100]);
        let bytes = encoded(&frame);
        for cut in 0..bytes.len() {
            let mut codec = FrameCodec::default();
            let mut src = BytesMut::from(&bytes[..cut]);
            assert_eq!(codec.decode(&mut src).unwrap(), None, "cut at {cut}");
            src.extend_from_slice(&bytes[cut..]);
            assert_eq!(codec.decode(&mut src).unwrap(), Some(frame.clone()));
            assert!(src.is_empty());
        }
    }

    /// A decoder fed `bytes` must end with frames or a typed error, never a
    /// panic, and never hold more than the maximum plus a header.
    fn decode_never_panics(bytes: &[u8]) {
        let max = 4096;
        let mut codec = FrameCodec::new(max);
        let mut src = BytesMut::new();
        for chunk in bytes.chunks(7) {
            src.extend_from_slice(chunk);
            loop {
                match codec.decode(&mut src) {
                    Ok(Some(frame)) => assert!(frame.body.len() <= max as usize),
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
            // Bounded by the maximum, whatever the header claims.
            assert!(src.capacity() <= 2 * (HEADER_BYTES + max as usize + bytes.len()) + 64);
        }
        let _ = codec.decode_eof(&mut src);
    }

    proptest! {
        #[test]
        fn frames_round_trip(frames in proptest::collection::vec(arb_frame(), 1..5)) {
            let mut bytes = BytesMut::new();
            for frame in &frames {
                FrameCodec::default().encode_into(frame, &mut bytes).unwrap();
            }
            prop_assert_eq!(decode_all(&mut FrameCodec::default(), &bytes).unwrap(), frames);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            decode_never_panics(&bytes);
        }

        #[test]
        fn random_bytes_after_the_magic_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut input = MAGIC.to_vec();
            input.push(1);
            input.extend(bytes);
            decode_never_panics(&input);
        }

        #[test]
        fn mutated_and_truncated_frames_give_a_frame_or_a_typed_error(
            frame in arb_frame(), position in any::<usize>(), byte in any::<u8>(), cut in any::<usize>(),
        ) {
            let mut bytes = encoded(&frame).to_vec();
            let position = position % bytes.len();
            bytes[position] = byte;
            decode_never_panics(&bytes);
            let cut = cut % (bytes.len() + 1);
            decode_never_panics(&bytes[..cut]);
        }
    }

    /// 10^5 random inputs from a fixed-seed generator, biased towards valid
    /// headers so the deeper paths are reached too.
    #[test]
    fn hundred_thousand_random_inputs_never_panic() {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let valid = encoded(&Frame::new(FrameType::Peer, 5, vec![3u8; 64])).to_vec();
        for round in 0..100_000u32 {
            let len = (next() % 128) as usize;
            let mut input: Vec<u8> = if round % 2 == 0 {
                (0..len).map(|_| next() as u8).collect()
            } else {
                let mut v = valid.clone();
                for _ in 0..(next() % 4) {
                    let i = (next() as usize) % v.len();
                    v[i] = next() as u8;
                }
                v.truncate((next() as usize) % (v.len() + 1));
                v
            };
            if round % 3 == 0 {
                input.extend_from_slice(&valid);
            }
            decode_never_panics(&input);
        }
    }
}
