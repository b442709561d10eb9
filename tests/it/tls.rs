//! TLS at the edge with a generated certificate, through real clients: curl (HTTP/1.1 and
//! h2 by ALPN), a rustls client holding a connection across a reload, the release binary
//! reloading on SIGHUP, and files that cannot serve refused at start.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use crate::common::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A fresh directory for one test's files.
fn dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("tls-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    d
}

/// Writes a new self-signed certificate for `localhost` and its key into `dir`; returns
/// the certificate's PEM.
fn write_cert(dir: &Path) -> String {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("certificate");
    let pem = c.cert.pem();
    std::fs::write(dir.join("cert.pem"), &pem).expect("write cert");
    std::fs::write(dir.join("key.pem"), c.signing_key.serialize_pem()).expect("write key");
    pem
}

fn tls_config(up: &Upstream, dir: &Path) -> String {
    config_text(
        &up.url(),
        &format!(
            "[server.tls]\ncert = \"{}\"\nkey = \"{}\"",
            dir.join("cert.pem").display(),
            dir.join("key.pem").display()
        ),
    )
}

/// curl's `(status, http version)` for `https://localhost:<port>/x`, trusting `ca`.
fn curl(port: u16, ca: &Path, version: &str) -> Result<(String, String), String> {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
        ])
        .arg(version)
        .arg("--cacert")
        .arg(ca)
        .arg("--resolve")
        .arg(format!("localhost:{port}:127.0.0.1"))
        .arg(format!("https://localhost:{port}/x"))
        .output()
        .expect("curl runs");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, v) = text.split_once(' ').ok_or(text.clone())?;
    Ok((status.to_owned(), v.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_speaks_http1_and_h2_over_tls() {
    let d = dir("curl");
    write_cert(&d);
    let up = Upstream::start().await;
    let gw = gateway(&tls_config(&up, &d)).await;
    let port = gw.public_addr.port();
    let ca = d.join("cert.pem");
    let h1 = tokio::task::spawn_blocking(move || curl(port, &ca, "--http1.1"));
    assert_eq!(h1.await.expect("join"), Ok(("200".into(), "1.1".into())));
    assert_eq!(up.next_seen().await.headers["x-forwarded-proto"], "https");
    let ca = d.join("cert.pem");
    let h2 = tokio::task::spawn_blocking(move || curl(port, &ca, "--http2"));
    assert_eq!(h2.await.expect("join"), Ok(("200".into(), "2".into())));
    // Plain HTTP on the TLS port is not served.
    let text = raw(gw.public_addr, b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert!(!text.contains("200 OK"), "{text}");
}

/// An HTTP/1.1 connection over TLS trusting only `ca_pem`.
async fn tls_client(
    port: u16,
    ca_pem: &str,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("pem"))
        .expect("root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http handshake");
    tokio::spawn(conn);
    sender
}

async fn get_on(sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>) -> StatusCode {
    let req = Request::get("/x")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .expect("request");
    // A keep-alive connection takes the next request only once it is idle again: hyper
    // refuses one sent before ("connection was not ready").
    guarded("the connection to be ready", sender.ready())
        .await
        .expect("connection ready");
    let resp = guarded("a TLS request", sender.send_request(req))
        .await
        .expect("response");
    let status = resp.status();
    resp.into_body().collect().await.expect("body");
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_is_reloaded_without_dropping_connections() {
    let d = dir("reload");
    let old = write_cert(&d);
    std::fs::copy(d.join("cert.pem"), d.join("old-ca.pem")).expect("copy");
    let up = Upstream::start().await;
    let gw = gateway(&tls_config(&up, &d)).await;
    let port = gw.public_addr.port();
    let mut open = tls_client(port, &old).await;
    assert_eq!(get_on(&mut open).await, StatusCode::OK);

    let new = write_cert(&d);
    gw.reload_tls().expect("reload");
    // The open connection goes on; new handshakes get the new certificate.
    assert_eq!(get_on(&mut open).await, StatusCode::OK);
    let mut fresh = tls_client(port, &new).await;
    assert_eq!(get_on(&mut fresh).await, StatusCode::OK);
    let old_ca = d.join("old-ca.pem");
    let refused = tokio::task::spawn_blocking(move || curl(port, &old_ca, "--http1.1"));
    assert!(
        refused.await.expect("join").is_err(),
        "the old certificate is gone"
    );

    // A broken key is refused on reload, naming it; the certificate in use stays.
    std::fs::write(d.join("key.pem"), "not a key").expect("write");
    let e = gw.reload_tls().expect_err("a broken key");
    assert!(e.to_string().contains("server.tls.key"), "{e}");
    let ca = d.join("cert.pem");
    let served = tokio::task::spawn_blocking(move || curl(port, &ca, "--http1.1"));
    assert_eq!(
        served.await.expect("join"),
        Ok(("200".into(), "1.1".into()))
    );
}

#[tokio::test]
async fn files_that_cannot_serve_are_refused_at_start_naming_the_key() {
    let d = dir("bad");
    write_cert(&d);
    let up = Upstream::start().await;
    let cases = [
        ("missing.pem", "key.pem", "server.tls.cert"),
        ("key.pem", "key.pem", "server.tls.cert"),
        ("cert.pem", "missing.pem", "server.tls.key"),
        ("cert.pem", "cert.pem", "server.tls.key"),
    ];
    for (cert, key, named) in cases {
        let text = config_text(
            &up.url(),
            &format!(
                "[server.tls]\ncert = \"{}\"\nkey = \"{}\"",
                d.join(cert).display(),
                d.join(key).display()
            ),
        );
        let config = flashgate::Config::from_toml(&text, "test", &[]).expect("valid config");
        let e = flashgate::Gateway::start(config)
            .await
            .err()
            .expect("refused at start");
        assert!(e.to_string().contains(named), "{cert}/{key}: {e}");
    }
    // A key that belongs to another certificate.
    let other = dir("bad-other");
    write_cert(&other);
    let text = config_text(
        &up.url(),
        &format!(
            "[server.tls]\ncert = \"{}\"\nkey = \"{}\"",
            d.join("cert.pem").display(),
            other.join("key.pem").display()
        ),
    );
    let config = flashgate::Config::from_toml(&text, "test", &[]).expect("valid config");
    let e = flashgate::Gateway::start(config)
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("server.tls.key"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reloads_on_sighup_and_keeps_running() {
    let d = dir("sighup");
    write_cert(&d);
    std::fs::copy(d.join("cert.pem"), d.join("old-ca.pem")).expect("copy");
    let up = Upstream::start().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let config = d.join("gateway.toml");
    let text = tls_config(&up, &d).replace(
        "127.0.0.1:0\"\nadmin",
        &format!("127.0.0.1:{port}\"\nadmin"),
    );
    std::fs::write(&config, text).expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_flashgate"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the binary");
    let pid = i32::try_from(child.id()).expect("pid");
    let old_ca = d.join("old-ca.pem");
    let up_now = guarded("the gateway to serve TLS", async {
        loop {
            let ca = old_ca.clone();
            if let Ok(Ok(r)) =
                tokio::task::spawn_blocking(move || curl(port, &ca, "--http1.1")).await
            {
                return r;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(up_now.0, "200");
    write_cert(&d);
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let new_ca = d.join("cert.pem");
    guarded("the new certificate after SIGHUP", async {
        loop {
            let ca = new_ca.clone();
            if let Ok(Ok(_)) =
                tokio::task::spawn_blocking(move || curl(port, &ca, "--http1.1")).await
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        child.try_wait().expect("status").is_none(),
        "SIGHUP stopped the gateway"
    );
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = child.wait().expect("exit");
    assert!(status.success(), "{status:?}");
}
