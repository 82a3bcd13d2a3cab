//! Traffic probes between namespaces, for the harness's own tests: does a
//! cut really cut, does loss really lose.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::netns::{enter, Network};

/// The port the probes listen on inside a host.
pub const PROBE_PORT: u16 = 7070;
/// How long a probe waits for traffic that may never come.
const PROBE_WAIT: Duration = Duration::from_millis(700);
/// How long a UDP receiver waits for the first datagram.
const FIRST_DATAGRAM_WAIT: Duration = Duration::from_secs(2);

/// Whether a TCP connection from host `from` to host `to` completes and
/// carries one byte each way.
///
/// # Errors
/// [`Error::Netns`] when a namespace cannot be entered, or the listener
/// cannot bind.
pub fn tcp_connects(network: &Network, from: usize, to: usize) -> Result<bool> {
    let target = network.socket_address(to, PROBE_PORT);
    let (bound_tx, bound_rx) = mpsc::channel::<Result<()>>();
    let to_namespace = network.host(to).namespace.clone();
    std::thread::scope(|scope| {
        let server = scope.spawn(move || -> Result<()> {
            let listener = enter(&to_namespace).and_then(|()| {
                TcpListener::bind(target).map_err(|error| io_error("bind", target, error))
            });
            let listener = match listener {
                Ok(listener) => {
                    let _ = bound_tx.send(Ok(()));
                    listener
                }
                Err(error) => {
                    let _ = bound_tx.send(Err(error));
                    return Ok(());
                }
            };
            listener
                .set_nonblocking(true)
                .map_err(|error| io_error("nonblocking", target, error))?;
            let deadline = Instant::now() + PROBE_WAIT * 2;
            while Instant::now() < deadline {
                if let Ok((mut stream, _)) = listener.accept() {
                    let _ = stream.set_nonblocking(false);
                    let mut byte = [0_u8; 1];
                    if stream.read_exact(&mut byte).is_ok() {
                        let _ = stream.write_all(&byte);
                    }
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        });
        bound_rx.recv().map_err(|_| Error::Netns {
            command: "probe listener".to_owned(),
            reason: "listener thread ended early".to_owned(),
        })??;
        let reached = network.run_in(from, move || {
            let Ok(mut stream) = TcpStream::connect_timeout(&target, PROBE_WAIT) else {
                return false;
            };
            let _ = stream.set_read_timeout(Some(PROBE_WAIT));
            let mut byte = [7_u8; 1];
            stream.write_all(&byte).is_ok() && stream.read_exact(&mut byte).is_ok() && byte[0] == 7
        })?;
        match server.join() {
            Ok(result) => result?,
            Err(panic) => std::panic::resume_unwind(panic),
        }
        Ok(reached)
    })
}

/// How many of `count` UDP datagrams sent from host `from` arrive at host `to`
/// (one direction only).
///
/// # Errors
/// [`Error::Netns`] when a namespace cannot be entered, or a socket cannot bind.
pub fn udp_delivered(network: &Network, from: usize, to: usize, count: usize) -> Result<usize> {
    let target = network.socket_address(to, PROBE_PORT);
    let (bound_tx, bound_rx) = mpsc::channel::<Result<()>>();
    let to_namespace = network.host(to).namespace.clone();
    std::thread::scope(|scope| {
        let receiver = scope.spawn(move || -> Result<usize> {
            let socket = enter(&to_namespace).and_then(|()| {
                UdpSocket::bind(target).map_err(|error| io_error("bind", target, error))
            });
            let socket = match socket {
                Ok(socket) => {
                    let _ = bound_tx.send(Ok(()));
                    socket
                }
                Err(error) => {
                    let _ = bound_tx.send(Err(error));
                    return Ok(0);
                }
            };
            // The sender may be slow to start on a busy machine: wait longer
            // for the first datagram, then stop at the first quiet PROBE_WAIT
            // (the sender is done or cut).
            socket
                .set_read_timeout(Some(FIRST_DATAGRAM_WAIT))
                .map_err(|error| io_error("timeout", target, error))?;
            let mut received = 0;
            let mut buffer = [0_u8; 64];
            while socket.recv(&mut buffer).is_ok() {
                if received == 0 {
                    socket
                        .set_read_timeout(Some(PROBE_WAIT))
                        .map_err(|error| io_error("timeout", target, error))?;
                }
                received += 1;
            }
            Ok(received)
        });
        bound_rx.recv().map_err(|_| Error::Netns {
            command: "probe receiver".to_owned(),
            reason: "receiver thread ended early".to_owned(),
        })??;
        network.run_in(from, move || -> Result<()> {
            let any: SocketAddr = "0.0.0.0:0".parse().unwrap_or(target);
            let socket = UdpSocket::bind(any).map_err(|error| io_error("bind", any, error))?;
            for sequence in 0..count {
                // A lost send is what is being measured, not an error.
                let _ = socket.send_to(&sequence.to_be_bytes(), target);
                // Paced so that socket buffers never drop what the firewall let through.
                std::thread::sleep(Duration::from_micros(200));
            }
            Ok(())
        })??;
        match receiver.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

fn io_error(what: &str, address: SocketAddr, error: std::io::Error) -> Error {
    Error::Netns {
        command: format!("{what} {address}"),
        reason: error.to_string(),
    }
}
