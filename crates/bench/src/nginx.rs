//! nginx (Debian's) as the reference reverse proxy: started in the sandbox's
//! network namespace so that it reaches the same server on the same
//! loopback the sandbar proxy dials, with its config, pid file, logs and
//! temp dirs in the scratch dir, and no daemon.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::netns;

/// Ports inside the sandbox's namespace: its loopback is its own, so fixed
/// numbers collide with nothing on the host.
pub const HTTP_PORT: u16 = 18080;
pub const HTTPS_PORT: u16 = 18443;

pub struct Nginx {
    child: Child,
    dir: PathBuf,
}

fn config(dir: &Path, upstream_port: u16) -> String {
    let d = dir.display();
    format!(
        "daemon off;
master_process on;
worker_processes auto;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    upstream sandbox {{
        server 127.0.0.1:{upstream_port};
        keepalive 128;
    }}
    server {{
        listen 127.0.0.1:{HTTP_PORT};
        listen 127.0.0.1:{HTTPS_PORT} ssl;
        ssl_certificate {d}/cert.pem;
        ssl_certificate_key {d}/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{
            proxy_pass http://sandbox;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $host;
        }}
    }}
}}
"
    )
}

impl Nginx {
    pub async fn start(netns_path: &Path, dir: &Path, upstream_port: u16) -> Result<Self> {
        std::fs::create_dir_all(dir.join("tmp"))?;
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .context("making nginx's certificate")?;
        std::fs::write(dir.join("cert.pem"), cert.cert.pem())?;
        std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem())?;
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config(dir, upstream_port))?;
        let log = std::fs::File::create(dir.join("stderr.log"))?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", netns_path.display()))
            .arg("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Master and workers in one group, stopped together.
            .process_group(0)
            .spawn()
            .context("starting nginx (Debian package nginx-light) under nsenter")?;
        let mut me = Self {
            child,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = me.child.try_wait()? {
                bail!("nginx exited at start ({status}): {}", me.logs());
            }
            if get_ok(netns_path, HTTP_PORT).await.is_ok() {
                return Ok(me);
            }
            if Instant::now() > deadline {
                bail!("nginx did not answer within 10 s: {}", me.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn logs(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("error.log"))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let group = Pid::from_raw(self.child.id() as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Workers outliving the master, or a master that ignored SIGTERM.
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// One GET / on `port` inside the namespace; Ok when it answers 200.
pub async fn get_ok(netns_path: &Path, port: u16) -> Result<()> {
    let tcp = netns::dial(
        netns_path.to_path_buf(),
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
    )
    .await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let req = http::Request::get("/")
        .header(http::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    resp.into_body().collect().await?;
    if status != http::StatusCode::OK {
        bail!("GET / on port {port} answered {status}");
    }
    Ok(())
}
