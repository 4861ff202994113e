//! Trust under attack and operations (issue 8): one process per data directory, the
//! client address from the one header the proxy sets, IPv6 per /64, health that
//! reflects the event writer, failed-authentication limits and slow clients.

use std::process::Command;

use adtally_store::SqliteStore;

use crate::durability::start_server;

/// Two stores on one data directory would judge and charge the same traffic twice.
#[test]
fn a_second_store_on_a_data_dir_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let first = SqliteStore::open(dir.path()).expect("first store");
    let err = SqliteStore::open(dir.path()).expect_err("a second store on the same directory");
    let message = err.to_string();
    assert!(message.contains(&dir.path().display().to_string()), "{message}");
    assert!(message.contains("another adtally process"), "{message}");
    drop(first);
    SqliteStore::open(dir.path()).expect("the lock is released with the store");
}

#[test]
fn a_second_process_on_a_data_dir_refuses_to_start() {
    let dir = tempfile::tempdir().expect("dir");
    let mut server = start_server(dir.path());
    let ndjson = dir.path().join("events.ndjson");
    std::fs::write(&ndjson, "").expect("ndjson");
    let runs: [&[&str]; 3] =
        [&["serve", "--listen", "127.0.0.1:0"], &["import", ndjson.to_str().expect("utf-8 path")], &["demo"]];
    for args in runs {
        let out = Command::new(env!("CARGO_BIN_EXE_adtally"))
            .args(args)
            .arg("--data")
            .arg(dir.path())
            .env("ADTALLY_ADMIN_KEY", crate::support::ADMIN)
            .env("ADTALLY_LOG", "warn")
            .output()
            .expect("run adtally");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started on a data dir in use");
        assert!(stderr.contains(&dir.path().display().to_string()), "{args:?}: {stderr}");
        assert!(stderr.contains("another adtally process"), "{args:?}: {stderr}");
    }
    let _ = server.child.kill();
    let _ = server.child.wait();
}
