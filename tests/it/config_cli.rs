//! The command line refuses bad configuration with a message naming the key, and prints
//! the effective configuration of a good one.

use std::path::PathBuf;
use std::process::{Command, Output};

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("flashgate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

fn flashgate(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flashgate"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run flashgate")
}

const UP: &str = "[upstream]\nurl = \"http://127.0.0.1:9\"\n";

/// Runs `check-config` on `text` and returns stderr, asserting a non-zero exit.
fn refused(name: &str, text: &str, extra: &[&str]) -> String {
    let path = temp_file(name, text);
    let p = path.to_str().expect("utf-8 path");
    let mut args = vec!["check-config", p];
    args.extend_from_slice(extra);
    let out = flashgate(&args, &[]);
    assert_eq!(out.status.code(), Some(2), "{name} was accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_values_are_refused_naming_the_key() {
    let cases: &[(&str, String, &str)] = &[
        ("unknown.toml", format!("{UP}[server]\nmax_conn = 1\n"), "server.max_conn"),
        ("url.toml", "[upstream]\nurl = \"not a url\"\n".into(), "upstream.url"),
        ("scheme.toml", "[upstream]\nurl = \"ftp://h\"\n".into(), "upstream.url"),
        // Adversarial review: credentials in the URL were used as part of the address to
        // connect to (every request 502) and shown in /readyz and the logs.
        ("userinfo.toml", "[upstream]\nurl = \"http://u:p@127.0.0.1:9\"\n".into(), "upstream.url"),
        ("missing.toml", "[server]\n".into(), "upstream"),
        ("nourl.toml", "[upstream]\ntimeout = \"1s\"\n".into(), "upstream.url"),
        ("capacity.toml", format!("{UP}[queue]\ncapacity = 0\n"), "queue.capacity"),
        ("type.toml", format!("{UP}[server]\nbody_limit = \"big\"\n"), "server.body_limit"),
        ("listen.toml", format!("{UP}[server]\nlisten = \"nowhere\"\n"), "server.listen"),
        ("duration.toml", format!("{UP}[server]\nheader_timeout = \"soon\"\n"), "server.header_timeout"),
        (
            "window.toml",
            format!("{UP}[[sale]]\nsku = \"a\"\nstock = 1\nstarts_at = 2026-11-11T02:00:00Z\nends_at = 2026-11-11T01:00:00Z\n"),
            "sale.0.ends_at",
        ),
        ("sku.toml", format!("{UP}[[sale]]\nsku = \"a b\"\nstock = 1\n"), "sale.0.sku"),
        ("nostock.toml", format!("{UP}[[sale]]\nsku = \"a\"\n"), "sale.0.stock"),
        ("level.toml", format!("{UP}[log]\nlevel = \"loud=[\"\n"), "log.level"),
        ("instance.toml", format!("{UP}[cluster]\ninstance_id = \"a b\"\n"), "cluster.instance_id"),
        ("advertise.toml", format!("{UP}[cluster]\nadvertise = \"nowhere\"\n"), "cluster.advertise"),
        ("ttl.toml", format!("{UP}[cluster]\nheartbeat = \"2s\"\nmember_ttl = \"3s\"\n"), "cluster.member_ttl"),
        // Adversarial review: a nanosecond heartbeat flooded the store and made the count flap;
        // a TTL of centuries overflowed the clock.
        ("beat.toml", format!("{UP}[cluster]\nheartbeat = \"1ns\"\nmember_ttl = \"2ns\"\n"), "cluster.heartbeat"),
        ("forever.toml", format!("{UP}[cluster]\nmember_ttl = \"1000years\"\n"), "cluster.member_ttl"),
        // Instances sharing a store verify each other's tokens: one secret, long enough.
        ("nosecret.toml", format!("{UP}[store]\nkind = \"redis\"\n"), "cluster.secret"),
        ("shortsecret.toml", format!("{UP}[cluster]\nsecret = \"short\"\n"), "cluster.secret"),
        (
            "seeds.toml",
            format!("{UP}[cluster]\nsecret = \"0123456789abcdef\"\n[store]\nkind = \"redis-cluster\"\n"),
            "store.urls",
        ),
        (
            "seedurl.toml",
            format!("{UP}[cluster]\nsecret = \"0123456789abcdef\"\n[store]\nkind = \"redis-cluster\"\nurls = [\"redis://a:1\", \"http://b\"]\n"),
            "store.urls.1",
        ),
    ];
    for (name, text, key) in cases {
        let err = refused(name, text, &[]);
        assert!(err.contains(&format!("`{key}`")), "{name}: {err}");
    }
}

#[test]
fn syntax_errors_name_the_file_and_line() {
    let err = refused("syntax.toml", "[upstream\nurl = 1\n", &[]);
    assert!(
        err.contains("syntax.toml") && err.contains("line 1"),
        "{err}"
    );
}

#[test]
fn overrides_are_validated_like_the_file() {
    let err = refused("ok.toml", UP, &["--set", "queue.capacity=0"]);
    assert!(err.contains("`queue.capacity`"), "{err}");
    let path = temp_file("ok2.toml", UP);
    let p = path.to_str().expect("utf-8 path");
    let out = flashgate(
        &["check-config", p],
        &[("FLASHGATE_SERVER_BODY_LIMIT", "0")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`server.body_limit`"));
    let out = flashgate(&["check-config", p], &[("FLASHGATE_NOSUCH_KEY", "1")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FLASHGATE_NOSUCH_KEY"));
}

#[test]
fn effective_config_shows_overrides_in_precedence_order() {
    let path = temp_file("eff.toml", &format!("{UP}[queue]\ncapacity = 10\n"));
    let p = path.to_str().expect("utf-8 path");
    let out = flashgate(
        &[
            "check-config",
            p,
            "--set",
            "queue.capacity=30",
            "--listen",
            "127.0.0.1:7000",
        ],
        &[
            ("FLASHGATE_QUEUE_CAPACITY", "20"),
            ("FLASHGATE_QUEUE_DRAIN_RATE", "42"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("capacity = 30"),
        "flag wins over env: {printed}"
    );
    assert!(
        printed.contains("drain_rate = 42"),
        "env wins over file: {printed}"
    );
    assert!(printed.contains("listen = \"127.0.0.1:7000\""), "{printed}");
}

#[test]
fn shipped_example_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/flashgate.toml");
    let out = flashgate(&["check-config", example], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unsigned_deliveries_over_the_proxied_upstream_are_warned_of() {
    let check = |name: &str, text: &str| {
        let path = temp_file(name, text);
        let out = flashgate(&["check-config", path.to_str().expect("utf-8")], &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8_lossy(&out.stderr).into_owned(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (err, _) = check("unsigned.toml", UP);
    assert!(err.contains("warning: delivery.signing_secret"), "{err}");
    let (err, printed) = check(
        "signed.toml",
        &format!("{UP}[delivery]\nsigning_secret = \"hunter2\"\n"),
    );
    assert!(!err.contains("warning"), "{err}");
    assert!(
        !printed.contains("hunter2"),
        "the secret is never printed: {printed}"
    );
    let (_, printed) = check(
        "tokens.toml",
        &format!("{UP}[cluster]\nsecret = \"hunter3-hunter3-hunter3\"\n"),
    );
    assert!(
        !printed.contains("hunter3"),
        "the token secret is never printed: {printed}"
    );
    let (err, _) = check("stream.toml", &format!("{UP}[cluster]\nsecret = \"0123456789abcdef\"\n[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:9\"\n[delivery]\nmode = \"stream\"\n"));
    assert!(!err.contains("signing_secret"), "{err}");
}

#[test]
fn serve_refuses_an_address_in_use_naming_the_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let path = temp_file("serve.toml", UP);
    let p = path.to_str().expect("utf-8 path");
    let out = flashgate(
        &[
            "serve",
            "--config",
            p,
            "--listen",
            &addr,
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.listen") && err.contains(&addr),
        "{err}"
    );
}

/// Adversarial review: a broken page template or TLS file made `check-config` exit 2 (a
/// refused configuration) but `serve` exit 1 (could not start) for the same config.
#[test]
fn serve_refuses_what_check_config_refuses_with_the_same_exit_code() {
    let dir = std::env::temp_dir().join(format!("flashgate-serve-pages-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("pages dir");
    std::fs::write(dir.join("wait.html"), "<p>{{ bogus }}</p>").expect("template");
    let text = format!(
        "{UP}[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[pages]\ndir = \"{}\"\n",
        dir.display()
    );
    let path = temp_file("broken-pages.toml", &text);
    let p = path.to_str().expect("utf-8 path");
    for command in ["check-config", "serve"] {
        let args: Vec<&str> = match command {
            "serve" => vec!["serve", "--config", p],
            _ => vec!["check-config", p],
        };
        let out = flashgate(&args, &[]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{command}: {err}");
        assert!(err.contains("pages.dir"), "{command}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
