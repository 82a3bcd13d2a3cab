//! The handshake: the first frame each way on every connection.
//!
//! The connecting side sends `Hello`; the accepting side answers `HelloOk`
//! or an `Error` frame, then closes. Nothing else may come first.
//!
//! # Bodies (a contract; `Hello` and `Error` are frozen across versions)
//!
//! Integers big-endian; `str16` is a `u16` length then that many UTF-8
//! bytes; `str32` the same with a `u32` length.
//!
//! - `Hello`: `min_version u8`, `max_version u8` (the versions the sender
//!   speaks), `role u8` (1 = peer, 2 = client), `group str16`,
//!   `member_id str16` (the sender's member id, or a client's name).
//! - `HelloOk`: `version u8` (the version both will speak from now on, the
//!   highest both speak), `member_id str16` (the accepting member's id);
//!   from version 2 on, `group_id str16` (the accepting member's group id,
//!   empty when it has none). A connecting member that has a group id
//!   closes a link whose `HelloOk` names another: as every member connects
//!   to every other, each pair is checked both ways. The frame's header
//!   says the version of its body.
//! - `Error`: `code u16` (see [`ErrorCode`]), `message str32` (for humans).
//!
//! Frames carrying these bodies are written with header version 1 forever,
//! so a peer of any version can read a refusal.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;

use super::frame::{Frame, FrameCodec, FrameError, FrameType, SUPPORTED_VERSIONS};

/// Longest group name or member id accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 253;
/// Longest error message written, in bytes; longer ones are cut.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 4096;

/// What the connecting side is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Another member of the group (sends peer messages).
    Peer,
    /// A client (sends requests, reads responses).
    Client,
}

impl Role {
    fn code(self) -> u8 {
        match self {
            Role::Peer => 1,
            Role::Client => 2,
        }
    }

    fn from_code(code: u8) -> Option<Role> {
        match code {
            1 => Some(Role::Peer),
            2 => Some(Role::Client),
            _ => None,
        }
    }
}

/// The first frame from the connecting side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Lowest protocol version the sender speaks.
    pub min_version: u8,
    /// Highest protocol version the sender speaks.
    pub max_version: u8,
    /// What the sender is.
    pub role: Role,
    /// The group it wants to talk to.
    pub group: String,
    /// Its member id (peers) or name (clients).
    pub member_id: String,
}

impl Hello {
    /// A hello speaking every version this build speaks.
    pub fn new(role: Role, group: impl Into<String>, member_id: impl Into<String>) -> Hello {
        Hello {
            min_version: SUPPORTED_VERSIONS.0,
            max_version: SUPPORTED_VERSIONS.1,
            role,
            group: group.into(),
            member_id: member_id.into(),
        }
    }

    /// The body of a `Hello` frame.
    pub fn encode(&self) -> Result<Bytes, HandshakeError> {
        let mut body = BytesMut::new();
        body.put_u8(self.min_version);
        body.put_u8(self.max_version);
        body.put_u8(self.role.code());
        put_str16(&mut body, "group", &self.group)?;
        put_str16(&mut body, "member id", &self.member_id)?;
        Ok(body.freeze())
    }

    /// The hello in a `Hello` frame body.
    pub fn decode(mut body: &[u8]) -> Result<Hello, HandshakeError> {
        let min_version = get_u8(&mut body, "hello")?;
        let max_version = get_u8(&mut body, "hello")?;
        let role_code = get_u8(&mut body, "hello")?;
        let role = Role::from_code(role_code)
            .ok_or_else(|| malformed("hello", format!("unknown role {role_code}")))?;
        let group = get_str16(&mut body, "hello")?;
        let member_id = get_str16(&mut body, "hello")?;
        expect_end(body, "hello")?;
        Ok(Hello {
            min_version,
            max_version,
            role,
            group,
            member_id,
        })
    }
}

/// The accepting side's answer to a good [`Hello`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelloOk {
    /// The version both sides speak from now on.
    pub version: u8,
    /// The accepting member's id.
    pub member_id: String,
    /// The accepting member's group id (version 2 on; empty when it has
    /// none, and in version 1).
    pub group_id: String,
}

impl HelloOk {
    /// The body of a `HelloOk` frame.
    pub fn encode(&self) -> Result<Bytes, HandshakeError> {
        let mut body = BytesMut::new();
        body.put_u8(self.version);
        put_str16(&mut body, "member id", &self.member_id)?;
        if self.version >= 2 {
            put_str16(&mut body, "group id", &self.group_id)?;
        }
        Ok(body.freeze())
    }

    /// The answer in a `HelloOk` frame body.
    pub fn decode(mut body: &[u8]) -> Result<HelloOk, HandshakeError> {
        let version = get_u8(&mut body, "hello-ok")?;
        let member_id = get_str16(&mut body, "hello-ok")?;
        let group_id = if version >= 2 {
            get_str16(&mut body, "hello-ok")?
        } else {
            String::new()
        };
        expect_end(body, "hello-ok")?;
        Ok(HelloOk {
            version,
            member_id,
            group_id,
        })
    }

    /// Whether its group id can be the same group as `ours`: equal, or
    /// either unknown (a member with no id, or of a version-1 build).
    pub fn same_group_id(&self, ours: &str) -> bool {
        ours.is_empty() || self.group_id.is_empty() || self.group_id == ours
    }
}

/// Why a connection is being closed, as sent in an `Error` frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// No protocol version in common.
    UnsupportedVersion,
    /// The `Hello` names another group.
    WrongGroup,
    /// A peer id that is not in the member list.
    UnknownMember,
    /// A frame could not be decoded or was not expected.
    Protocol,
    /// A frame was larger than the maximum.
    TooLarge,
    /// The server is shutting down.
    ShuttingDown,
    /// The connecting side proved nothing, or not who it says it is (no
    /// client certificate, or one that does not name the member).
    Unauthenticated,
    /// A code this build does not know (sent by a newer peer).
    Other(u16),
}

impl ErrorCode {
    /// The code on the wire.
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::UnsupportedVersion => 1,
            ErrorCode::WrongGroup => 2,
            ErrorCode::UnknownMember => 3,
            ErrorCode::Protocol => 4,
            ErrorCode::TooLarge => 5,
            ErrorCode::ShuttingDown => 6,
            ErrorCode::Unauthenticated => 7,
            ErrorCode::Other(code) => code,
        }
    }

    /// The error code under `code`.
    pub fn from_code(code: u16) -> ErrorCode {
        match code {
            1 => ErrorCode::UnsupportedVersion,
            2 => ErrorCode::WrongGroup,
            3 => ErrorCode::UnknownMember,
            4 => ErrorCode::Protocol,
            5 => ErrorCode::TooLarge,
            6 => ErrorCode::ShuttingDown,
            7 => ErrorCode::Unauthenticated,
            other => ErrorCode::Other(other),
        }
    }
}

/// The body of an `Error` frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorBody {
    /// What went wrong, for programs.
    pub code: ErrorCode,
    /// What went wrong, for humans.
    pub message: String,
}

impl ErrorBody {
    /// An `Error` frame (always header version 1) carrying this body.
    pub fn to_frame(&self) -> Frame {
        let mut message = self.message.as_str();
        if message.len() > MAX_ERROR_MESSAGE_BYTES {
            let mut end = MAX_ERROR_MESSAGE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message = &message[..end];
        }
        let mut body = BytesMut::with_capacity(6 + message.len());
        body.put_u16(self.code.code());
        // Fits: cut to MAX_ERROR_MESSAGE_BYTES above.
        body.put_u32(message.len() as u32);
        body.put_slice(message.as_bytes());
        Frame {
            version: 1,
            frame_type: FrameType::Error,
            request_id: 0,
            body: body.freeze(),
        }
    }

    /// The error in an `Error` frame body.
    pub fn decode(mut body: &[u8]) -> Result<ErrorBody, HandshakeError> {
        if body.remaining() < 6 {
            return Err(malformed("error", "shorter than 6 bytes".to_string()));
        }
        let code = ErrorCode::from_code(body.get_u16());
        let len = body.get_u32() as usize;
        if body.remaining() != len {
            return Err(malformed(
                "error",
                format!("message length {len} but {} bytes follow", body.remaining()),
            ));
        }
        let message = String::from_utf8(body.to_vec())
            .map_err(|_| malformed("error", "message is not UTF-8".to_string()))?;
        Ok(ErrorBody { code, message })
    }
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The stream did not carry a valid frame.
    #[error("handshake: {0}")]
    Frame(#[from] FrameError),
    /// A handshake body could not be decoded or encoded.
    #[error("malformed {what} body: {reason}")]
    Malformed {
        /// Which body.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A frame other than the handshake's came first.
    #[error("expected a {expected:?} frame first, got {got:?}")]
    UnexpectedFrame {
        /// The frame type the handshake needed.
        expected: FrameType,
        /// The frame type that came.
        got: FrameType,
    },
    /// The other side closed the connection before finishing the handshake.
    #[error("connection closed during the handshake")]
    Closed,
    /// The other side refused us with an `Error` frame.
    #[error("refused by the server ({code:?}): {message}")]
    Refused {
        /// Its error code.
        code: ErrorCode,
        /// Its explanation.
        message: String,
    },
    /// We refused the other side (an `Error` frame was sent to it).
    #[error("refused the connection ({code:?}): {message}")]
    Rejected {
        /// The code sent.
        code: ErrorCode,
        /// The explanation sent.
        message: String,
    },
}

/// The peer names allowed to connect as peers, shared with whoever keeps
/// it current (the raft loop, as the configuration changes).
#[derive(Clone, Debug, Default)]
pub struct KnownPeers(Option<std::sync::Arc<std::sync::RwLock<std::collections::HashSet<String>>>>);

impl KnownPeers {
    /// Any name is accepted.
    pub fn any() -> KnownPeers {
        KnownPeers(None)
    }

    /// Only `names` (until [`set`](Self::set) changes them).
    pub fn only<S: Into<String>>(names: impl IntoIterator<Item = S>) -> KnownPeers {
        let names = names.into_iter().map(Into::into).collect();
        KnownPeers(Some(std::sync::Arc::new(std::sync::RwLock::new(names))))
    }

    /// Replaces the names (no effect on [`any`](Self::any)).
    pub fn set<S: Into<String>>(&self, names: impl IntoIterator<Item = S>) {
        if let Some(known) = &self.0 {
            let names = names.into_iter().map(Into::into).collect();
            *known
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = names;
        }
    }

    /// Whether `name` may connect as a peer.
    pub fn admits(&self, name: &str) -> bool {
        self.0.as_ref().is_none_or(|known| {
            known
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(name)
        })
    }
}

/// What the accepting side checks in a `Hello`.
#[derive(Clone, Debug)]
pub struct AcceptPolicy {
    /// This group's name; other groups are refused.
    pub group: String,
    /// This member's id, sent back in `HelloOk`.
    pub member_id: String,
    /// This member's group id, sent back in a version-2 `HelloOk` (empty:
    /// none).
    pub group_id: String,
    /// Peer ids allowed to connect as peers.
    pub known_peers: KnownPeers,
    /// What the connection proved, and whether proof is required.
    pub credentials: Credentials,
    /// Clients without a certificate are let past the handshake, to send
    /// `Authenticate` with a token before anything else (the member has a
    /// token file).
    pub clients_may_use_tokens: bool,
}

/// What the transport proved about the connecting side.
#[derive(Clone, Debug, Default)]
pub enum Credentials {
    /// Nothing is required (plaintext, no authentication configured).
    #[default]
    NotRequired,
    /// Required, over TLS: the client certificate the TLS handshake
    /// verified against the group's CA, if one was presented. A peer's
    /// must name the member it says it is; a client needs one.
    Tls(Option<rustls::pki_types::CertificateDer<'static>>),
    /// Required, on a plaintext port: a client cannot prove anything and
    /// is refused; peers are taken on trust (there is no way to check).
    Plaintext,
}

/// The accepting side of the handshake: reads the `Hello`, checks it, and
/// answers `HelloOk` (returning the hello and the chosen version) or an
/// `Error` frame (returning [`HandshakeError::Rejected`]). The caller closes
/// the connection on error and applies its own timeout.
pub async fn accept<S>(
    framed: &mut Framed<S, FrameCodec>,
    policy: &AcceptPolicy,
) -> Result<(Hello, u8), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = match framed.next().await {
        None => return Err(HandshakeError::Closed),
        Some(Ok(frame)) => frame,
        Some(Err(error)) => {
            let code = match &error {
                FrameError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
                FrameError::TooLarge { .. } => ErrorCode::TooLarge,
                _ => ErrorCode::Protocol,
            };
            return Err(reject(framed, code, error.to_string()).await);
        }
    };
    if frame.frame_type != FrameType::Hello {
        let message = format!("expected a Hello frame first, got {:?}", frame.frame_type);
        return Err(reject(framed, ErrorCode::Protocol, message).await);
    }
    let hello = match Hello::decode(&frame.body) {
        Ok(hello) => hello,
        Err(error) => return Err(reject(framed, ErrorCode::Protocol, error.to_string()).await),
    };
    let (min, max) = SUPPORTED_VERSIONS;
    let version = hello.max_version.min(max);
    if version < hello.min_version.max(min) {
        let message = format!(
            "no common protocol version: client speaks {}..={}, server speaks {min}..={max}",
            hello.min_version, hello.max_version
        );
        return Err(reject(framed, ErrorCode::UnsupportedVersion, message).await);
    }
    if hello.group != policy.group {
        let message = format!(
            "wrong group: this is member {:?} of group {:?}, not group {:?}",
            policy.member_id, policy.group, hello.group
        );
        return Err(reject(framed, ErrorCode::WrongGroup, message).await);
    }
    if hello.role == Role::Peer && !policy.known_peers.admits(&hello.member_id) {
        let message = format!(
            "{:?} is not a member of group {:?}",
            hello.member_id, policy.group
        );
        return Err(reject(framed, ErrorCode::UnknownMember, message).await);
    }
    if let Err(message) = check_credentials(&hello, policy) {
        return Err(reject(framed, ErrorCode::Unauthenticated, message).await);
    }
    let ok = HelloOk {
        version,
        member_id: policy.member_id.clone(),
        group_id: policy.group_id.clone(),
    };
    let mut frame = Frame::new(FrameType::HelloOk, 0, ok.encode()?);
    frame.version = version;
    framed.send(frame).await?;
    Ok((hello, version))
}

fn check_credentials(hello: &Hello, policy: &AcceptPolicy) -> Result<(), String> {
    match (&policy.credentials, hello.role) {
        (Credentials::NotRequired, _) | (Credentials::Plaintext, Role::Peer) => Ok(()),
        (Credentials::Plaintext | Credentials::Tls(None), Role::Client)
            if policy.clients_may_use_tokens =>
        {
            Ok(())
        }
        (Credentials::Plaintext, Role::Client) => Err(
            "this port needs TLS with a client certificate; it is plaintext here, so clients are refused"
                .into(),
        ),
        (Credentials::Tls(None), Role::Peer) => Err(format!(
            "peer {:?} presented no certificate",
            hello.member_id
        )),
        (Credentials::Tls(Some(certificate)), Role::Peer) => {
            let name = super::tls::member_name(&hello.member_id);
            if super::tls::certificate_names(certificate, name) {
                Ok(())
            } else {
                Err(format!(
                    "peer {:?} presented a certificate that does not name {name:?}",
                    hello.member_id
                ))
            }
        }
        (Credentials::Tls(None), Role::Client) => {
            Err("a client certificate from the group's CA is needed".into())
        }
        (Credentials::Tls(Some(_)), Role::Client) => Ok(()),
    }
}

/// The connecting side: sends `hello` and waits for `HelloOk` or a refusal.
pub async fn connect<S>(
    framed: &mut Framed<S, FrameCodec>,
    hello: &Hello,
) -> Result<HelloOk, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut frame = Frame::new(FrameType::Hello, 0, hello.encode()?);
    frame.version = 1;
    framed.send(frame).await?;
    let reply = match framed.next().await {
        None => return Err(HandshakeError::Closed),
        Some(reply) => reply?,
    };
    match reply.frame_type {
        FrameType::HelloOk => HelloOk::decode(&reply.body),
        FrameType::Error => {
            let error = ErrorBody::decode(&reply.body)?;
            Err(HandshakeError::Refused {
                code: error.code,
                message: error.message,
            })
        }
        got => Err(HandshakeError::UnexpectedFrame {
            expected: FrameType::HelloOk,
            got,
        }),
    }
}

/// Sends an `Error` frame (best effort: the connection is closing anyway).
pub async fn send_error<S>(framed: &mut Framed<S, FrameCodec>, code: ErrorCode, message: String)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = ErrorBody { code, message }.to_frame();
    if let Err(error) = framed.send(frame).await {
        tracing::debug!(%error, "could not send the error frame");
    }
}

async fn reject<S>(
    framed: &mut Framed<S, FrameCodec>,
    code: ErrorCode,
    message: String,
) -> HandshakeError
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    send_error(framed, code, message.clone()).await;
    HandshakeError::Rejected { code, message }
}

fn malformed(what: &'static str, reason: String) -> HandshakeError {
    HandshakeError::Malformed { what, reason }
}

fn put_str16(body: &mut BytesMut, what: &'static str, value: &str) -> Result<(), HandshakeError> {
    if value.len() > MAX_NAME_BYTES {
        return Err(malformed(
            what,
            format!(
                "{} bytes, more than the {MAX_NAME_BYTES} allowed",
                value.len()
            ),
        ));
    }
    body.put_u16(value.len() as u16);
    body.put_slice(value.as_bytes());
    Ok(())
}

fn get_u8(body: &mut &[u8], what: &'static str) -> Result<u8, HandshakeError> {
    if body.is_empty() {
        return Err(malformed(what, "too short".to_string()));
    }
    Ok(body.get_u8())
}

fn get_str16(body: &mut &[u8], what: &'static str) -> Result<String, HandshakeError> {
    if body.remaining() < 2 {
        return Err(malformed(what, "too short for a string length".to_string()));
    }
    let len = body.get_u16() as usize;
    if len > MAX_NAME_BYTES || body.remaining() < len {
        return Err(malformed(
            what,
            format!(
                "string of {len} bytes with {} left (at most {MAX_NAME_BYTES})",
                body.remaining()
            ),
        ));
    }
    let text = String::from_utf8(body[..len].to_vec())
        .map_err(|_| malformed(what, "string is not UTF-8".to_string()))?;
    body.advance(len);
    Ok(text)
}

fn expect_end(body: &[u8], what: &'static str) -> Result<(), HandshakeError> {
    if body.is_empty() {
        Ok(())
    } else {
        Err(malformed(what, format!("{} trailing bytes", body.len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_name() -> impl Strategy<Value = String> {
        "[a-z0-9.-]{0,60}"
    }

    proptest! {
        #[test]
        fn hello_round_trips(min in any::<u8>(), max in any::<u8>(), peer in any::<bool>(), group in arb_name(), id in arb_name()) {
            let hello = Hello { min_version: min, max_version: max, role: if peer { Role::Peer } else { Role::Client }, group, member_id: id };
            prop_assert_eq!(Hello::decode(&hello.encode().unwrap()).unwrap(), hello);
        }

        #[test]
        fn hello_ok_round_trips(version in any::<u8>(), id in arb_name(), group_id in arb_name()) {
            // Version 1 carries no group id.
            let group_id = if version >= 2 { group_id } else { String::new() };
            let ok = HelloOk { version, member_id: id, group_id };
            prop_assert_eq!(HelloOk::decode(&ok.encode().unwrap()).unwrap(), ok);
        }

        #[test]
        fn error_round_trips(code in any::<u16>(), message in ".{0,100}") {
            let error = ErrorBody { code: ErrorCode::from_code(code), message };
            let frame = error.to_frame();
            prop_assert_eq!(frame.version, 1);
            prop_assert_eq!(ErrorBody::decode(&frame.body).unwrap(), error);
        }

        #[test]
        fn garbage_bodies_give_typed_errors(body in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = Hello::decode(&body);
            let _ = HelloOk::decode(&body);
            let _ = ErrorBody::decode(&body);
        }
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let hello = Hello::new(Role::Peer, "g", "m").encode().unwrap();
        for cut in 0..hello.len() {
            assert!(matches!(
                Hello::decode(&hello[..cut]),
                Err(HandshakeError::Malformed { .. })
            ));
        }
        let mut bad_role = hello.to_vec();
        bad_role[2] = 9;
        let err = Hello::decode(&bad_role).unwrap_err();
        assert!(err.to_string().contains("unknown role 9"), "{err}");
        let mut trailing = hello.to_vec();
        trailing.push(0);
        assert!(Hello::decode(&trailing).is_err());
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        assert!(Hello::new(Role::Peer, long, "m").encode().is_err());
    }

    #[test]
    fn long_error_messages_are_cut_on_a_char_boundary() {
        let message = "é".repeat(MAX_ERROR_MESSAGE_BYTES);
        let frame = ErrorBody {
            code: ErrorCode::Protocol,
            message,
        }
        .to_frame();
        let decoded = ErrorBody::decode(&frame.body).unwrap();
        assert!(decoded.message.len() <= MAX_ERROR_MESSAGE_BYTES);
        assert!(decoded.message.chars().all(|c| c == 'é'));
    }

    async fn run_pair(
        hello: Hello,
        policy: AcceptPolicy,
    ) -> (
        Result<HelloOk, HandshakeError>,
        Result<(Hello, u8), HandshakeError>,
    ) {
        let (a, b) = tokio::io::duplex(4096);
        let mut client = Framed::new(a, FrameCodec::default());
        let mut server = Framed::new(b, FrameCodec::default());
        tokio::join!(connect(&mut client, &hello), accept(&mut server, &policy))
    }

    fn policy() -> AcceptPolicy {
        AcceptPolicy {
            group: "orders".into(),
            member_id: "orders-0".into(),
            group_id: "3f6c".into(),
            known_peers: KnownPeers::only(["orders-1"]),
            credentials: Credentials::NotRequired,
            clients_may_use_tokens: false,
        }
    }

    #[tokio::test]
    async fn good_hello_is_accepted() {
        let (client, server) =
            run_pair(Hello::new(Role::Peer, "orders", "orders-1"), policy()).await;
        let ok = client.unwrap();
        assert_eq!(
            ok,
            HelloOk {
                version: 2,
                member_id: "orders-0".into(),
                group_id: "3f6c".into(),
            }
        );
        assert!(ok.same_group_id("3f6c") && ok.same_group_id(""));
        assert!(!ok.same_group_id("9a01"));
        let (hello, version) = server.unwrap();
        assert_eq!((hello.member_id.as_str(), version), ("orders-1", 2));
    }

    /// A member of an older build speaks version 1 only: it gets the
    /// version-1 `HelloOk` (header and body) it can read, without the id.
    #[tokio::test]
    async fn a_version_1_peer_gets_a_version_1_answer() {
        let (a, b) = tokio::io::duplex(4096);
        let mut client = Framed::new(a, FrameCodec::default());
        let mut server = Framed::new(b, FrameCodec::default());
        let mut old = Hello::new(Role::Peer, "orders", "orders-1");
        old.max_version = 1;
        let policy = policy();
        let (_, accepted) = tokio::join!(
            client.send(Frame::new(FrameType::Hello, 0, old.encode().unwrap())),
            accept(&mut server, &policy)
        );
        assert_eq!(accepted.unwrap().1, 1);
        let reply = client.next().await.unwrap().unwrap();
        assert_eq!((reply.frame_type, reply.version), (FrameType::HelloOk, 1));
        let ok = HelloOk::decode(&reply.body).unwrap();
        assert_eq!((ok.version, ok.group_id.as_str()), (1, ""));
        assert!(ok.same_group_id("9a01"), "an unknown id is not a mismatch");
    }

    #[tokio::test]
    async fn wrong_group_unknown_peer_and_versions_are_refused_with_reasons() {
        let (client, server) = run_pair(Hello::new(Role::Client, "payments", "c"), policy()).await;
        let err = client.unwrap_err();
        assert!(
            matches!(&err, HandshakeError::Refused { code: ErrorCode::WrongGroup, message } if message.contains("\"payments\"")),
            "{err}"
        );
        assert!(matches!(
            server,
            Err(HandshakeError::Rejected {
                code: ErrorCode::WrongGroup,
                ..
            })
        ));

        let (client, _) = run_pair(Hello::new(Role::Peer, "orders", "orders-9"), policy()).await;
        assert!(matches!(
            client,
            Err(HandshakeError::Refused {
                code: ErrorCode::UnknownMember,
                ..
            })
        ));
        // A client may use any name.
        let (client, _) = run_pair(Hello::new(Role::Client, "orders", "orders-9"), policy()).await;
        assert!(client.is_ok());

        let mut future = Hello::new(Role::Client, "orders", "c");
        future.min_version = 3;
        future.max_version = 4;
        let (client, _) = run_pair(future, policy()).await;
        let err = client.unwrap_err();
        assert!(
            matches!(&err, HandshakeError::Refused { code: ErrorCode::UnsupportedVersion, message } if message.contains("server speaks 1..=2")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_frame_in_an_unknown_header_version_gets_the_spoken_versions_back() {
        let (a, b) = tokio::io::duplex(4096);
        let mut client = Framed::new(a, FrameCodec::default());
        let mut server = Framed::new(b, FrameCodec::default());
        let mut raw = FrameCodec::default()
            .encode_to_bytes(&Frame::new(
                FrameType::Hello,
                0,
                Hello::new(Role::Client, "orders", "c").encode().unwrap(),
            ))
            .unwrap()
            .to_vec();
        raw[4] = 7;
        use tokio::io::AsyncWriteExt;
        client.get_mut().write_all(&raw).await.unwrap();
        let server = accept(&mut server, &policy()).await;
        assert!(matches!(
            server,
            Err(HandshakeError::Rejected {
                code: ErrorCode::UnsupportedVersion,
                ..
            })
        ));
        let reply = client.next().await.unwrap().unwrap();
        let error = ErrorBody::decode(&reply.body).unwrap();
        assert!(error.message.contains("speaks 1..=2"), "{}", error.message);
    }

    #[tokio::test]
    async fn a_non_hello_first_frame_is_refused() {
        let (a, b) = tokio::io::duplex(4096);
        let mut client = Framed::new(a, FrameCodec::default());
        let mut server = Framed::new(b, FrameCodec::default());
        client
            .send(Frame::new(FrameType::Request, 1, Bytes::new()))
            .await
            .unwrap();
        let server = accept(&mut server, &policy()).await;
        assert!(matches!(
            server,
            Err(HandshakeError::Rejected {
                code: ErrorCode::Protocol,
                ..
            })
        ));
        let reply = client.next().await.unwrap().unwrap();
        assert_eq!(reply.frame_type, FrameType::Error);
    }
}
