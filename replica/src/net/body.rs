//! Serde bodies: how peer messages and client messages become frame bodies.
//!
//! The format is [postcard](https://docs.rs/postcard) 1.x: integers as LEB128
//! varints (zig-zag for signed), enums as the varint index of the variant then
//! its fields, `Option` as a 0/1 byte then the value, strings and byte strings
//! as a varint length then the bytes, sequences as a varint count then the
//! elements, structs as their fields in declaration order. `bytes::Bytes`
//! serializes as one byte string (length then raw bytes), not element by
//! element. Decoding never allocates more than the input justifies.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A body could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The bytes are not a valid `what`.
    #[error("malformed {what} body: {reason}")]
    Malformed {
        /// What was expected (e.g. "client request").
        what: &'static str,
        /// What the decoder found wrong.
        reason: String,
    },
    /// The bytes decode, but with bytes left over: a version or type mix-up.
    #[error("malformed {what} body: {trailing_bytes} trailing bytes")]
    TrailingBytes {
        /// What was expected.
        what: &'static str,
        /// Bytes after the value.
        trailing_bytes: usize,
    },
    /// The value could not be serialized (e.g. a map with non-string keys).
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// What serde reported.
        reason: String,
    },
}

/// `value` as a body.
pub fn encode_body<T: Serialize + ?Sized>(
    what: &'static str,
    value: &T,
) -> Result<Bytes, BodyError> {
    postcard::to_allocvec(value)
        .map(Bytes::from)
        .map_err(|error| BodyError::Encode {
            what,
            reason: error.to_string(),
        })
}

/// The `T` in `body`, which must hold exactly one value.
pub fn decode_body<T: DeserializeOwned>(what: &'static str, body: &[u8]) -> Result<T, BodyError> {
    let (value, rest) = postcard::take_from_bytes(body).map_err(|error| BodyError::Malformed {
        what,
        reason: error.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(BodyError::TrailingBytes {
            what,
            trailing_bytes: rest.len(),
        });
    }
    Ok(value)
}

/// A peer message as the body of a `Peer` frame.
pub fn encode_peer<T: Serialize>(message: &T) -> Result<Bytes, BodyError> {
    encode_body("peer message", message)
}

/// A peer message serialized after what `buf` already holds (the frame
/// header's room, see [`FrameCodec::seal`](super::frame::FrameCodec::seal)).
pub fn encode_peer_after<T: Serialize>(message: &T, buf: Vec<u8>) -> Result<Vec<u8>, BodyError> {
    postcard::to_extend(message, buf).map_err(|error| BodyError::Encode {
        what: "peer message",
        reason: error.to_string(),
    })
}

/// The peer message in a `Peer` frame body.
pub fn decode_peer<T: DeserializeOwned>(body: &[u8]) -> Result<T, BodyError> {
    decode_body("peer message", body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Entry;

    #[test]
    fn bytes_are_one_byte_string_not_a_sequence() {
        let entry = Entry::normal(1, 1, vec![0xAB; 1024]);
        let body = encode_body("entry", &entry).unwrap();
        // index 1, term 1, kind 0: one byte each; length 1024: two varint bytes.
        assert_eq!(body.len(), 3 + 2 + 1024);
        assert_eq!(decode_body::<Entry>("entry", &body).unwrap(), entry);
    }

    #[test]
    fn garbage_and_trailing_bytes_are_typed_errors() {
        let err = decode_body::<Entry>("entry", &[0xFF; 3]).unwrap_err();
        assert!(
            matches!(err, BodyError::Malformed { what: "entry", .. }),
            "{err}"
        );
        let mut body = encode_body("entry", &Entry::normal(1, 1, vec![1]))
            .unwrap()
            .to_vec();
        body.push(0);
        let err = decode_body::<Entry>("entry", &body).unwrap_err();
        assert!(
            matches!(
                err,
                BodyError::TrailingBytes {
                    trailing_bytes: 1,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_huge_announced_length_does_not_allocate() {
        // A Vec<Entry> claiming u32::MAX elements, then nothing.
        let body = [0xFF, 0xFF, 0xFF, 0xFF, 0x0F];
        let err = decode_body::<Vec<Entry>>("entries", &body).unwrap_err();
        assert!(matches!(err, BodyError::Malformed { .. }), "{err}");
    }
}
