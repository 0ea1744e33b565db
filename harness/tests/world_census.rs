//! Census: zombies with parents, secrets, reaped orphans, open fds.

mod common;

use common::{Need, open_world, world_main};
use doppel_harness::census::SecretLocation;
use doppel_harness::{ExitStatus, WorldCommand};
use std::time::Duration;

fn census_finds_planted_zombies_with_their_parent() {
    let w = open_world();
    let f = w.zombie_factory(5).unwrap();
    assert_eq!(f.zombies.len(), 5);
    let c = w.census().unwrap();
    let zs = c.zombies();
    assert_eq!(zs.len(), 5, "{zs:?}");
    for z in &zs {
        assert!(f.zombies.contains(&z.process.stat.pid));
        assert_eq!(z.parent.map(|p| p.stat.pid), Some(f.pid));
    }
    assert_eq!(c.zombies_of(f.pid).len(), 5);
}

fn census_finds_a_secret_in_environ_and_not_an_absent_one() {
    let w = open_world();
    let s = w
        .spawn(
            &WorldCommand::new("/bin/sleep")
                .arg("1000")
                .env("REFBOX_TOKEN", "s3cr3t-7f1c"),
        )
        .unwrap();
    let other = w
        .spawn(&WorldCommand::new("/bin/sleep").args(["1000"]))
        .unwrap();
    let c = w.census().unwrap();
    let hits = c.containing_secret("s3cr3t-7f1c");
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].pid, s.pid);
    assert_eq!(
        hits[0].location,
        SecretLocation::Environ("REFBOX_TOKEN".into())
    );
    assert!(c.containing_secret("never-planted-secret").is_empty());
    assert!(c.process(other.pid).is_some());
    // argv is searched too.
    let a = w
        .spawn(
            &WorldCommand::new("/bin/sleep")
                .arg("1000")
                .arg0("leak=argv-secret"),
        )
        .unwrap();
    let c = w.census().unwrap();
    let hits = c.containing_secret("argv-secret");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].pid, a.pid);
    assert_eq!(hits[0].location, SecretLocation::Argv(0));
}

fn orphans_reaped_by_init_are_recorded() {
    let w = open_world();
    let orphan = w.make_orphan(7).unwrap();
    let c = w.census().unwrap();
    let rec = c
        .reaped_orphans()
        .iter()
        .find(|o| o.pid == orphan)
        .unwrap_or_else(|| panic!("orphan {orphan} not recorded: {:?}", c.reaped_orphans()));
    assert_eq!(rec.status, ExitStatus::Exited(7));
    assert!(!rec.comm.is_empty());
    assert!(rec.start_time.is_some());
}

fn reaped_orphan_argv_comes_from_the_census_cache() {
    let w = open_world();
    let daemon = w.daemon().unwrap();
    let argv = w
        .census()
        .unwrap()
        .process(daemon.pid)
        .unwrap()
        .argv
        .clone();
    assert!(!argv.is_empty());
    w.signal(daemon.pid, doppel_harness::Signal::KILL).unwrap();
    // init reaps it; poll the census (each call is a round trip) until a deadline.
    let o = common::poll_census(&w, "SIGKILLed daemon reaped and recorded", |c| {
        c.reaped_orphans()
            .iter()
            .find(|o| o.pid == daemon.pid)
            .cloned()
    });
    assert_eq!(o.argv, argv);
    assert_eq!(o.status, ExitStatus::Signaled(doppel_harness::Signal::KILL));
}

fn census_lists_open_fds() {
    let w = open_world();
    // The sleeper reports ready from main, long after the dynamic loader's
    // transient fds are closed, so its fd table is stable: 0-2 and its log.
    let imp = w
        .impostor(
            &doppel_harness::ImpostorKind::Unrelated,
            doppel_harness::Placement::Anywhere,
        )
        .unwrap();
    let c = w.census().unwrap();
    let fds = c.open_fds(imp.pid);
    // fd 3 is the ready pipe, which the sleeper closes just after writing
    // its line: it may or may not be gone yet.
    let nums: Vec<i32> = fds.iter().map(|f| f.0).filter(|&n| n != 3).collect();
    assert_eq!(
        nums,
        vec![0, 1, 2, 4],
        "no control socket or other init fd leaks: {fds:?}"
    );
    assert!(
        fds.iter().all(|(n, t)| *n != 3 || t.starts_with("pipe:")),
        "{fds:?}"
    );
    assert!(
        fds.iter().all(|(_, t)| !t.starts_with("socket:")),
        "{fds:?}"
    );
    assert!(fds[1].1.contains(".doppel-init"), "{fds:?}");
    assert!(fds.last().unwrap().1.ends_with(".log"), "{fds:?}");
    let init = c.process(doppel_harness::Pid::INIT).unwrap();
    assert!(!init.spawned_by_init);
    assert!(c.process(imp.pid).unwrap().spawned_by_init);
}

fn signals_sent_to_init_are_recorded_with_their_sender() {
    let w = open_world();
    // Before anything signals it: children exiting (kernel SIGCHLD) are
    // not recorded.
    for _ in 0..3 {
        w.run(&WorldCommand::new("/bin/true"), Duration::from_secs(10))
            .unwrap();
    }
    assert_eq!(w.census().unwrap().init_signals(), []);

    // What a runtime that trusted a pid file holding `1` would do. KILL
    // first: uncatchable, dropped by the kernel for a namespace's init.
    let s = w
        .spawn(&WorldCommand::new("/bin/sh").args([
            "-c",
            "kill -KILL 1; kill -TERM 1; kill -USR1 1; kill -HUP 1; kill -37 1; kill -CHLD 1; sleep 1000",
        ]))
        .unwrap();
    // Sorted: the kernel hands pending signals over lowest number first.
    let want = [1, 10, 15, 17, 37];
    let got = common::poll_census(&w, "the shell's five signals to init", |c| {
        (c.init_signals().len() >= want.len()).then(|| c.init_signals().to_vec())
    });
    let mut signos: Vec<i32> = got.iter().map(|g| g.signal.get()).collect();
    signos.sort_unstable();
    assert_eq!(signos, want, "{got:?}");
    for g in &got {
        assert_eq!(g.sender, Some(s.pid), "{g}");
        assert_eq!(g.code, 0, "SI_USER: {g}");
        // Read when init took the signal. The shell stays (waiting for its
        // sleep) rather than exec'ing it: during an exec the sender's
        // cmdline reads empty, which made this check flaky.
        assert!(!g.sender_argv.is_empty(), "{g}");
    }
    let term = got.iter().find(|g| g.signal.get() == 15).unwrap();
    assert_eq!(
        term.to_string(),
        format!("SIGTERM from pid {} {:?}", s.pid, term.sender_argv)
    );
    // init kept running and serving: it still spawns, waits and reaps.
    let exit = w
        .run(&WorldCommand::new("/bin/true"), Duration::from_secs(10))
        .unwrap();
    assert!(exit.status.success());
    let c = w.census().unwrap();
    assert!(c.process(doppel_harness::Pid::INIT).is_some());
    assert_eq!(
        c.init_signals().len(),
        want.len(),
        "nothing new: {:?}",
        c.init_signals()
    );
    assert_eq!(c.init_signals_dropped(), 0);
}

world_main!(
    Need::Worlds => [
        signals_sent_to_init_are_recorded_with_their_sender,
        census_finds_planted_zombies_with_their_parent,
        census_finds_a_secret_in_environ_and_not_an_absent_one,
        orphans_reaped_by_init_are_recorded,
        reaped_orphan_argv_comes_from_the_census_cache,
        census_lists_open_fds,
    ],
);
