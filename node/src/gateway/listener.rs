//! A TCP acceptor that disables Nagle's algorithm on every connection: poem's own does not,
//! and a response written in two segments then waits for the client's delayed ACK (~40 ms).

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use tokio::net::{TcpListener, TcpStream};

/// Accepts connections with `TCP_NODELAY` set.
pub struct NoDelayAcceptor {
    listener: TcpListener,
    local_addr: LocalAddr,
}

impl NoDelayAcceptor {
    /// Binds the address now, so a port in use fails start-up instead of a background task.
    pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = LocalAddr(listener.local_addr()?.into());
        Ok(Self {
            listener,
            local_addr,
        })
    }
}

impl Acceptor for NoDelayAcceptor {
    type Io = TcpStream;

    fn local_addr(&self) -> Vec<LocalAddr> {
        vec![self.local_addr.clone()]
    }

    async fn accept(&mut self) -> std::io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (stream, remote) = self.listener.accept().await?;
        stream.set_nodelay(true)?;
        Ok((
            stream,
            self.local_addr.clone(),
            RemoteAddr(remote.into()),
            Scheme::HTTP,
        ))
    }
}
