//! Connecting to a port on loopback inside a network namespace the runtime
//! made itself (sandboxes without the node network). The socket is created
//! on a short-lived thread that entered the namespace: a socket stays in the
//! namespace it was made in, so the thread can end while the stream lives on.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::Arc;

pub(crate) async fn dial_in_netns(
    netns: Arc<OwnedFd>,
    port: u16,
) -> io::Result<tokio::net::TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("sandbar-dial".into())
        .spawn(move || {
            let result = crate::sys::setns(&netns, libc::CLONE_NEWNET).and_then(|()| {
                let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                match TcpStream::connect(v4) {
                    Ok(s) => Ok(s),
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => TcpStream::connect(
                        SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
                    )
                    .map_err(|e6| {
                        // Report the IPv4 refusal unless IPv6 failed differently.
                        if e6.kind() == io::ErrorKind::ConnectionRefused
                            || e6.kind() == io::ErrorKind::AddrNotAvailable
                        {
                            e
                        } else {
                            e6
                        }
                    }),
                    Err(e) => Err(e),
                }
            });
            let _ = tx.send(result);
        })?;
    let stream = rx
        .await
        .map_err(|_| io::Error::other("dial thread died"))??;
    stream.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(stream)
}
