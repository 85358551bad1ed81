//! Real receivers on loopback, shared by every integration test; each test file uses only
//! some of their helpers, hence the allow.
#![allow(dead_code)]

pub mod chat;
pub mod receiver;
pub mod smtp;

use std::net::SocketAddr;

/// A 127.0.0.1 port that refuses connections until a server is started on it, for a receiver
/// that is down and later comes up at the same address. The socket is bound but not
/// listening: the kernel refuses connections to it, and no other process can take the port
/// meanwhile. Starting a server turns this very socket into its listener ("find a free port,
/// then bind it again" would let another process take the port in between).
pub struct ClosedPort {
    socket: tokio::net::TcpSocket,
    addr: SocketAddr,
}

impl ClosedPort {
    pub fn new() -> ClosedPort {
        // No SO_REUSEADDR: another socket cannot share the port while this one holds it.
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket
            .bind("127.0.0.1:0".parse().unwrap())
            .expect("bind 127.0.0.1:0");
        let addr = socket.local_addr().unwrap();
        ClosedPort { socket, addr }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Starts listening on the port (needs a tokio runtime).
    pub fn listen(self) -> tokio::net::TcpListener {
        self.socket
            .listen(1024)
            .expect("listen on the reserved port")
    }

    /// [`ClosedPort::listen`] as a blocking std listener, for servers run on their own threads.
    pub fn listen_std(self) -> std::net::TcpListener {
        let listener = self.listen().into_std().expect("a std listener");
        listener
            .set_nonblocking(false)
            .expect("a blocking listener");
        listener
    }
}
