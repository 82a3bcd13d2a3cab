//! The framed binary TCP protocol on port 20911, for peers and clients.
//!
//! - [`frame`]: the frame header and the codec (the byte layout is a contract).
//! - [`handshake`]: the first frame each way (version, group, member id, role).
//! - [`body`]: how serde values (peer messages, client messages) become bodies.
//! - [`client_proto`]: client requests, responses and errors.
//! - [`budget`]: the client request bytes read and not yet answered, over
//!   the binary listener and the HTTP front end.
//! - [`listener`]: accepts connections and hands the server typed inbound items.
//! - [`outbound`]: one self-reconnecting, bounded-queue link per peer.
//! - [`client`]: the async client library (redirects, retries, pipelining).
//! - [`backoff`]: capped exponential back-off with jitter.
//! - [`tls`]: mutual TLS from PEM files reloaded when they change;
//!   [`stream`]: a plain or TLS connection.
//!
//! Nothing here knows the consensus message type: peers carry any
//! `T: Serialize + DeserializeOwned`.

pub mod backoff;
pub mod body;
pub mod budget;
pub mod client;
pub mod client_proto;
pub mod frame;
pub mod handshake;
pub mod listener;
pub mod outbound;
pub mod stream;
pub mod tls;
