//! Library mode (`refbox::Runtime` in-process) with real shims, outside
//! worlds: the scoped reaper, failed inits, lifecycle and crash evidence.
//! Every process is owned by the test's [`common::Reaped`] guard.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use refbox::runtime::KillOutcome;
use refbox::status::{IdentityKind, Status};
use refbox::{BoxId, CreateOptions, Pid, Runtime, RuntimeError, Strategies};

fn runtime(root: &std::path::Path, strategies: Strategies) -> Runtime {
    let mut rt = Runtime::open(root, strategies).expect("open root");
    rt.set_shim_path(common::shim_bin());
    rt
}

fn opts(id: &str, argv: &[&str]) -> CreateOptions {
    CreateOptions {
        id: BoxId::new(id).unwrap(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        secret: None,
    }
}

#[test]
fn eight_failed_inits_leave_no_zombies() {
    let _guard = common::Reaped::new();
    let (_tmp, root) = common::root();
    let rt = runtime(&root, Strategies::default());
    for i in 0..8 {
        let err = rt
            .create(&opts(&format!("bad-{i}"), &["/nonexistent/program"]))
            .unwrap_err();
        assert!(matches!(err, RuntimeError::ShimFailed { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/program"), "{err}");
    }
    assert_eq!(common::zombie_children(), Vec::<i32>::new());
    assert!(rt.registered_children().is_empty());
    // A failed create leaves no box behind.
    assert!(rt.list().boxes.is_empty());
}

/// The naive reaper, for showing that the test below can fail.
fn reap_any(_ready: &[(Pid, std::os::fd::BorrowedFd<'_>)]) -> Vec<(Pid, ExitStatus)> {
    let mut out = Vec::new();
    // rustix's waitpid(None) is waitpid(0) (own group); wait() is wait4(-1).
    while let Ok(Some((pid, st))) = rustix::process::wait(rustix::process::WaitOptions::NOHANG) {
        out.push((
            Pid::new(i64::from(pid.as_raw_nonzero().get())).unwrap(),
            ExitStatus::from_raw(st.as_raw()),
        ));
    }
    out
}

/// The embedder's probe (refbox::embed): its child exits 7 and stays a
/// zombie while the runtime's reaper reaps two killed boxes' shims.
fn probe_with(strategies: Strategies) -> refbox::embed::ProbeReport {
    let _guard = common::Reaped::new();
    let (_tmp, root) = common::root();
    let rt = runtime(&root, strategies);
    let opts = refbox::embed::ProbeOptions {
        child_exit: 7,
        boxes: 2,
        payload: vec!["sleep".into(), "100".into()],
    };
    let report = refbox::embed::reaper_probe(&rt, &opts).expect("probe runs");
    assert_eq!(report.reaped, 2, "the reaper reaped both shims: {report:?}");
    assert!(rt.list().boxes.is_empty(), "the probe deletes its boxes");
    report
}

#[test]
fn embedder_child_exit_code_is_never_stolen() {
    let report = probe_with(Strategies::default());
    assert_eq!(report.child.code, Some(7), "{report:?}");
    assert!(report.kept);
}

#[test]
fn a_waitpid_minus_one_reaper_would_steal_it() {
    // Proves the test above can fail: with the naive strategy the embedder's
    // wait finds nothing (ECHILD).
    let report = probe_with(Strategies {
        reap: reap_any,
        ..Strategies::default()
    });
    assert_eq!(report.child.code, None, "{report:?}");
    assert!(report.child.error.is_some() && !report.kept, "{report:?}");
}

#[test]
fn lifecycle_create_start_kill_restart_keeps_crash_evidence() {
    let _guard = common::Reaped::new();
    let (_tmp, root) = common::root();
    let rt = runtime(&root, Strategies::default());
    let id = BoxId::new("life").unwrap();
    rt.create(&opts("life", &["sh", "-c", "exit 3"])).unwrap();
    let s = rt.state(&id).unwrap();
    assert_eq!(
        (s.status, s.identity),
        (Status::Created, IdentityKind::Verified)
    );
    rt.start(&id, None).unwrap();
    let s = rt.wait_stopped(&id).unwrap();
    assert_eq!(s.status, Status::Stopped);
    assert_eq!(s.exit.as_ref().and_then(|e| e.code), Some(3));
    assert!(s.exit_previous.is_none());
    // A fresh runtime (a new CLI invocation) sees the same evidence.
    let rt2 = runtime(&root, Strategies::default());
    assert!(matches!(
        rt2.kill(&id, libc::SIGTERM).unwrap(),
        KillOutcome::NotRunning { .. }
    ));
    rt2.start(&id, None).unwrap();
    let s = rt2.wait_stopped(&id).unwrap();
    assert_eq!(s.exit.as_ref().and_then(|e| e.code), Some(3));
    assert_eq!(s.exit_previous.as_ref().and_then(|e| e.code), Some(3));
    assert!(s.exit.unwrap().time_unix_ms >= s.exit_previous.unwrap().time_unix_ms);
    rt2.delete(&id, false).unwrap();
    assert!(!root.join("life").exists());
}

#[test]
fn a_restarted_running_box_still_reports_the_earlier_exit() {
    // `load` skips the look for `exit` while a box's first shim lives; a
    // restart must say that an earlier run left one.
    let _guard = common::Reaped::new();
    let (tmp, root) = common::root();
    let rt = runtime(&root, Strategies::default());
    let id = BoxId::new("again").unwrap();
    let marker = tmp.path().join("ran-once");
    let script = format!(
        "if [ -e {m} ]; then exec sleep 100; else touch {m}; exit 3; fi",
        m = marker.display()
    );
    rt.create(&opts("again", &["sh", "-c", &script])).unwrap();
    assert!(rt.state(&id).unwrap().exit.is_none());
    rt.start(&id, None).unwrap();
    let s = rt.wait_stopped(&id).unwrap();
    assert_eq!(s.exit.as_ref().and_then(|e| e.code), Some(3));
    // A new invocation restarts it; the payload now runs on.
    let rt2 = runtime(&root, Strategies::default());
    rt2.start(&id, None).unwrap();
    let s = rt2.state(&id).unwrap();
    assert_eq!(s.status, Status::Running);
    assert_eq!(s.exit.as_ref().and_then(|e| e.code), Some(3), "{s:?}");
    let listed = rt2.list();
    assert_eq!(listed.boxes[0].exit.as_ref().and_then(|e| e.code), Some(3));
    rt2.delete(&id, true).unwrap();
}

#[test]
fn kill_forwards_to_payload_and_exit_is_recorded() {
    let _guard = common::Reaped::new();
    let (_tmp, root) = common::root();
    let rt = runtime(&root, Strategies::default());
    let id = BoxId::new("k").unwrap();
    rt.create(&opts("k", &["sleep", "100"])).unwrap();
    rt.start(&id, None).unwrap();
    assert_eq!(rt.state(&id).unwrap().status, Status::Running);
    assert!(matches!(
        rt.kill(&id, libc::SIGTERM).unwrap(),
        KillOutcome::Signalled { .. }
    ));
    let s = rt.wait_stopped(&id).unwrap();
    assert_eq!(s.exit.and_then(|e| e.signal), Some(libc::SIGTERM));
    assert!(matches!(rt.delete(&id, false), Ok(())));
}

#[test]
fn kill_before_start_records_why_the_created_box_ended() {
    let _guard = common::Reaped::new();
    let (_tmp, root) = common::root();
    let rt = runtime(&root, Strategies::default());
    let id = BoxId::new("c").unwrap();
    rt.create(&opts("c", &["sleep", "100"])).unwrap();
    assert_eq!(rt.state(&id).unwrap().status, Status::Created);
    assert!(matches!(
        rt.kill(&id, libc::SIGTERM).unwrap(),
        KillOutcome::Signalled { .. }
    ));
    let s = rt.wait_stopped(&id).unwrap();
    let exit = s
        .exit
        .expect("an exit record for a box stopped before start");
    assert_eq!(exit.signal, Some(libc::SIGTERM));
    assert!(exit.note.unwrap_or_default().contains("never ran"));
    assert!(matches!(rt.delete(&id, false), Ok(())));
}

#[test]
fn delete_refuses_running_without_force() {
    let _guard = common::Reaped::new();
    let (_tmp, root) = common::root();
    let rt = runtime(&root, Strategies::default());
    let id = BoxId::new("r").unwrap();
    rt.create(&opts("r", &["sleep", "100"])).unwrap();
    rt.start(&id, None).unwrap();
    assert!(matches!(
        rt.delete(&id, false),
        Err(RuntimeError::Running { .. })
    ));
    rt.delete(&id, true).unwrap();
    assert!(!root.join("r").exists());
}

#[test]
fn secrets_reach_payload_stdin_not_argv_or_environ() {
    let _guard = common::Reaped::new();
    let (_tmp, root) = common::root();
    let rt = runtime(&root, Strategies::default());
    let id = BoxId::new("s").unwrap();
    let mut o = opts("s", &["sh", "-c", "cat; sleep 100"]);
    o.secret = Some(b"hunter2-secret".to_vec());
    rt.create(&o).unwrap();
    rt.start(&id, None).unwrap();
    let out = root.join("s/log/output");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !common::read(&out).contains("hunter2-secret") && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert!(
        common::read(&out).contains("hunter2-secret"),
        "payload got the secret on stdin"
    );
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        for f in ["cmdline", "environ"] {
            let b = std::fs::read(entry.path().join(f)).unwrap_or_default();
            assert!(
                !b.windows(14).any(|w| w == b"hunter2-secret"),
                "secret in {}/{f}",
                entry.path().display()
            );
        }
    }
    // state.json keeps no secrets either.
    assert!(!common::read(&root.join("s/state.json")).contains("hunter2"));
    rt.delete(&id, true).unwrap();
}

#[test]
fn cleanup_logs_removes_dead_keeps_live_leaves_oversized() {
    use refbox::status::CleanupAction;
    let _guard = common::Reaped::new();
    let (_tmp, root) = common::root();
    let rt = runtime(&root, Strategies::default());
    for id in ["live", "dead", "big", "legacy"] {
        rt.create(&opts(id, &["sleep", "100"])).unwrap();
        rt.start(&BoxId::new(id).unwrap(), None).unwrap();
    }
    for id in ["dead", "legacy"] {
        let id = BoxId::new(id).unwrap();
        rt.kill(&id, libc::SIGKILL).unwrap();
        assert_eq!(rt.wait_stopped(&id).unwrap().status, Status::Stopped);
    }
    let dead_pid = rt
        .state(&BoxId::new("legacy").unwrap())
        .unwrap()
        .pid
        .unwrap();
    std::fs::write(root.join("legacy/log/.sentinel"), format!("{dead_pid}\n")).unwrap();
    let big = root.join("big/log/.sentinel");
    std::fs::remove_file(&big).unwrap();
    std::fs::File::create(&big)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();

    let report = rt.cleanup_logs();
    let action = |id: &str| report.boxes.iter().find(|b| b.id == id).map(|b| b.action);
    assert_eq!(action("live"), Some(CleanupAction::Kept), "{report:?}");
    assert_eq!(action("dead"), Some(CleanupAction::Removed), "{report:?}");
    assert_eq!(action("legacy"), Some(CleanupAction::Removed), "{report:?}");
    assert_eq!(action("big"), None);
    assert!(report.errors.iter().any(|e| e.path == big), "{report:?}");
    assert!(big.exists() && root.join("live/log/.sentinel").exists());
    assert!(!root.join("dead/log").exists());
    // A box whose log dir was cleaned can still be restarted.
    let dead = BoxId::new("dead").unwrap();
    rt.start(&dead, None).unwrap();
    assert_eq!(rt.state(&dead).unwrap().status, Status::Running);
    for id in ["live", "dead", "big"] {
        rt.delete(&BoxId::new(id).unwrap(), true).unwrap();
    }
}

#[test]
fn half_created_box_can_be_deleted() {
    let (_tmp, root) = common::root();
    let rt = runtime(&root, Strategies::default());
    std::fs::create_dir(root.join("half")).unwrap();
    let id = BoxId::new("half").unwrap();
    assert!(rt.state(&id).is_err());
    rt.delete(&id, false).unwrap();
    assert!(!root.join("half").exists());
}

/// This process's threads named `name` (their `comm`), by thread id.
fn threads_named(name: &str) -> Vec<i32> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            (comm.trim_end() == name).then(|| e.file_name().to_str()?.parse().ok())?
        })
        .collect()
}

/// Whether thread `tid` leaves this process before `deadline`. A joined
/// thread has cleared its tid word (what `join` waits on) but may still be
/// listed for a moment while the kernel finishes its exit, so this polls.
fn thread_leaves(tid: i32, deadline: std::time::Duration) -> bool {
    let until = std::time::Instant::now() + deadline;
    while std::path::Path::new(&format!("/proc/self/task/{tid}")).exists() {
        if std::time::Instant::now() > until {
            return false;
        }
        std::thread::yield_now();
    }
    true
}

#[test]
fn dropping_the_runtime_stops_its_reaper_at_once() {
    let _guard = common::Reaped::new();
    let (_tmp, root) = common::root();
    // Under `cargo test` other tests' runtimes run in this process too.
    let others = threads_named("refbox-reaper");
    let rt = runtime(&root, Strategies::default());
    let id = BoxId::new("d").unwrap();
    rt.create(&opts("d", &["sleep", "100"])).unwrap();
    let mut reapers = threads_named("refbox-reaper");
    reapers.retain(|tid| !others.contains(tid));
    let [reaper] = reapers[..] else {
        panic!("expected one reaper thread: {reapers:?}");
    };
    assert_eq!(
        rt.registered_children().len(),
        1,
        "the live shim is watched"
    );
    // Drop wakes and joins the thread; a reaper blocked in poll without a
    // wake-up would hang here (and nextest's timeout would fail the test),
    // and one left running would never leave the task list.
    drop(rt);
    assert!(
        thread_leaves(reaper, std::time::Duration::from_secs(10)),
        "reaper thread {reaper} still runs after the runtime was dropped"
    );
    // The box outlives the runtime object; a fresh one adopts and deletes it.
    let rt = runtime(&root, Strategies::default());
    assert_eq!(rt.state(&id).unwrap().status, Status::Created);
    rt.delete(&id, true).unwrap();
}

#[test]
fn concurrent_starts_of_a_stopped_box_spawn_one_shim() {
    let _guard = common::Reaped::new();
    let (_tmp, root) = common::root();
    let rt = runtime(&root, Strategies::default());
    let id = BoxId::new("race").unwrap();
    rt.create(&opts("race", &["sleep", "100"])).unwrap();
    rt.start(&id, None).unwrap();
    rt.kill(&id, libc::SIGKILL).unwrap();
    assert_eq!(rt.wait_stopped(&id).unwrap().status, Status::Stopped);
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| rt.start(&id, None))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let already = results
        .iter()
        .filter(|r| matches!(r, Err(RuntimeError::AlreadyRunning { .. })))
        .count();
    assert_eq!((ok, already), (1, 3), "{results:?}");
    let shims = common::children()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with(b"refbox-shim\0"))
        })
        .count();
    assert_eq!(shims, 1);
    rt.delete(&id, true).unwrap();
}

#[test]
fn recover_reports_a_live_box_without_waiting_for_its_lock() {
    use refbox::status::RecoverAction;
    let _guard = common::Reaped::new();
    let (_tmp, root) = common::root();
    let rt = runtime(&root, Strategies::default());
    let id = BoxId::new("busy").unwrap();
    rt.create(&opts("busy", &["sleep", "100"])).unwrap();
    rt.start(&id, None).unwrap();
    // Another refbox is in the middle of an operation on the box (a
    // `delete --force` waiting for a kill holds the lock for seconds).
    // Recovery only reports a verified box, so it neither waits for the
    // lock nor gives up on the box when the lock's wait times out.
    let held = refbox::fswrite::DirLock::acquire(&root.join("busy")).unwrap();
    let report = rt.recover();
    drop(held);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let [b] = &report.boxes[..] else {
        panic!("{:?}", report.boxes)
    };
    assert_eq!((b.id.as_str(), b.action), ("busy", RecoverAction::Adopted));
    rt.delete(&id, true).unwrap();
}

#[test]
fn cleanup_logs_removes_a_log_dir_only_under_its_box_lock() {
    use refbox::status::CleanupAction;
    let _guard = common::Reaped::new();
    let (_tmp, root) = common::root();
    let rt = runtime(&root, Strategies::default());
    let id = BoxId::new("restarting").unwrap();
    rt.create(&opts("restarting", &["sleep", "100"])).unwrap();
    rt.start(&id, None).unwrap();
    rt.kill(&id, libc::SIGKILL).unwrap();
    assert_eq!(rt.wait_stopped(&id).unwrap().status, Status::Stopped);
    // Another invocation holds the box (a `start` whose new shim is about
    // to write a new sentinel): the dead shim's log dir is not removed
    // under it. Cleanup waits for the lock (10 s here, then names the box).
    let held = refbox::fswrite::DirLock::acquire(&root.join("restarting")).unwrap();
    let report = rt.cleanup_logs();
    assert!(root.join("restarting/log/.sentinel").exists(), "{report:?}");
    assert!(report.boxes.is_empty(), "{report:?}");
    let [e] = &report.errors[..] else {
        panic!("{report:?}")
    };
    assert_eq!(e.id.as_deref(), Some("restarting"));
    assert!(e.error.contains("flock"), "{e:?}");
    // Once the lock is free, the dead owner's dir goes.
    drop(held);
    let report = rt.cleanup_logs();
    assert_eq!(
        report.boxes.iter().map(|b| b.action).collect::<Vec<_>>(),
        [CleanupAction::Removed],
        "{report:?}"
    );
    assert!(!root.join("restarting/log").exists());
    rt.delete(&id, true).unwrap();
}
