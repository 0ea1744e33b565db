//! Measures what the refbox note reports: the cost of one identity
//! verification, in-process `state`, and `refbox state` as a CLI process.
//!
//! `cargo run --release -p refbox --example measure` (builds the binaries
//! first: `cargo build --release -p refbox`).

use std::time::{Duration, Instant};

use refbox::identity::{HostFacts, VerifyRequest};
use refbox::{BoxId, CreateOptions, Runtime, Strategies};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Deletes (killing) the box when dropped, panics included.
struct DeleteOnDrop<'a>(&'a Runtime, BoxId);

impl Drop for DeleteOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.delete(&self.1, true);
    }
}

fn main() -> anyhow::Result<()> {
    // Become the subreaper of what we start, so the payload is ours to reap.
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().join("root");
    let exe_dir = std::env::current_exe()?
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.to_path_buf())
        .unwrap();
    let mut rt = Runtime::open(&root, Strategies::default())?;
    rt.set_shim_path(exe_dir.join("refbox-shim"));
    let id = BoxId::new("m")?;
    rt.create(&CreateOptions {
        id: id.clone(),
        argv: vec!["sleep".into(), "1000".into()],
        env: vec![],
        secret: None,
    })?;
    rt.start(&id, None)?;
    // Whatever happens below (a panic, a closed stdout), the box goes.
    let _cleanup = DeleteOnDrop(&rt, id.clone());

    let bytes = std::fs::read(root.join("m/shim.pid"))?;
    let record = refbox::identity::parse_record(&bytes)?;
    let host = HostFacts::detect()?;
    println!("pidfs available: {}", host.pidfs);
    let n = 20_000;
    let t = Instant::now();
    for _ in 0..n {
        let r = refbox::identity::verify_with_pidfd(&VerifyRequest {
            id: &id,
            record: &record,
            host: &host,
        });
        assert!(matches!(r, refbox::ProcessIdentity::Verified(_)));
    }
    println!(
        "identity verification (pidfd + pidfs inode + liveness): {:.2} µs",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );

    let host_nopidfs = HostFacts {
        pidfs: false,
        ..host
    };
    let t = Instant::now();
    for _ in 0..n {
        let r = refbox::identity::verify_with_pidfd(&VerifyRequest {
            id: &id,
            record: &record,
            host: &host_nopidfs,
        });
        assert!(matches!(r, refbox::ProcessIdentity::Verified(_)));
    }
    println!(
        "identity verification, fallback (start time + argv): {:.2} µs",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );

    let pid = record.pid();
    let t = Instant::now();
    for _ in 0..n {
        let b = std::fs::read(format!("/proc/{pid}/stat"))?;
        assert!(refbox::identity::parse_stat_start_time(&b).is_some());
    }
    println!(
        "procfs start-time parse alone: {:.2} µs",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );

    let samples: Vec<Duration> = (0..2000)
        .map(|_| {
            let t = Instant::now();
            rt.state(&id).unwrap();
            t.elapsed()
        })
        .collect();
    println!("Runtime::state in-process: median {:?}", median(samples));

    let refbox_bin = exe_dir.join("refbox");
    let samples: Vec<Duration> = (0..100)
        .map(|_| {
            let t = Instant::now();
            let out = std::process::Command::new(&refbox_bin)
                .arg("--root")
                .arg(&root)
                .args(["state", "m"])
                .output()
                .unwrap();
            assert!(out.status.success());
            t.elapsed()
        })
        .collect();
    println!("`refbox state` CLI process: median {:?}", median(samples));

    // list over the live box plus a 4 GiB sparse record and a FIFO.
    for (name, what) in [("big", "sparse"), ("fifo", "fifo")] {
        let dir = root.join(name);
        rustix::fs::mkdir(&dir, rustix::fs::Mode::from_raw_mode(0o700))?;
        std::fs::copy(root.join("m/state.json"), dir.join("state.json"))?;
        let text = std::fs::read_to_string(dir.join("state.json"))?
            .replace("\"id\": \"m\"", &format!("\"id\": \"{name}\""));
        std::fs::write(dir.join("state.json"), text)?;
        if what == "sparse" {
            std::fs::File::create(dir.join("shim.pid"))?.set_len(4 << 30)?;
        } else {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                dir.join("shim.pid"),
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o600),
                0,
            )?;
        }
    }
    let before = refbox::fsread::bytes_read();
    let t = Instant::now();
    let report = rt.list();
    println!(
        "Runtime::list (1 live + 4 GiB sparse + FIFO): {:?}, {} bytes read, {} boxes, {} errors",
        t.elapsed(),
        refbox::fsread::bytes_read() - before,
        report.boxes.len(),
        report.errors.len()
    );
    let samples: Vec<Duration> = (0..50)
        .map(|_| {
            let t = Instant::now();
            let out = std::process::Command::new(&refbox_bin)
                .arg("--root")
                .arg(&root)
                .args(["list", "--format", "json"])
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(4));
            t.elapsed()
        })
        .collect();
    println!(
        "`refbox list` CLI over the same root: median {:?}",
        median(samples)
    );
    let rss =
        nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?.max_rss();
    println!("peak RSS of any refbox CLI run: {rss} KiB");

    drop(_cleanup);
    while let Ok(Some(_)) = rustix::process::wait(rustix::process::WaitOptions::empty()) {}
    Ok(())
}
