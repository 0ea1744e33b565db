//! refbox benches on real shims in worlds: recovery of N boxes (10% dead,
//! 10% replaced by impostors), one identity verification (procfs start-time
//! parse vs pidfd + pidfs inode vs refbox's full check), stale-sentinel
//! cleanup over N box dirs, and `list` over a root holding a 4 GiB sparse and
//! a FIFO identity record.
//!
//! The measured code must run in the world's PID namespace (a recorded pid is
//! a world pid), so this binary plays four roles: the bench driver on the
//! host; doppel-init and the impostor (`doppel_harness::init::dispatch`);
//! `refbox-shim` (run through a symlink of that name, so the shim's argv is
//! exactly `refbox-shim <box_id>`); and a *worker* started in the world that
//! creates boxes or times one operation `iters` times and prints the total.
//! Setup (worlds, boxes, impostors, resetting what a recovery pass changed,
//! re-planting removed sentinels) is outside the timed part: the worker times
//! only the call itself, and the driver hands that total to criterion
//! (`iter_custom`).
//!
//! The run ends with a side-by-side summary (medians from this run, per-box
//! cost, a least-squares fit of recovery time against N).
//!
//! `cargo bench -p doppel-benches --bench refbox` (`-- --quick --noplot` for
//! a brief pass: N = 1000 is then measured by the summary only, with few samples).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use doppel_benches::{human, median, ratio};
use doppel_conformance::bench::fit;
use doppel_harness::{
    Capabilities, ImpostorError, ImpostorKind, Pid, Placement, Plant, RemoteError, Signal, World,
    WorldCommand, WorldError, WorldOptions,
};

/// `argv[1]` that makes this binary a worker (in a world).
const WORKER_ARG: &str = "__refbox-bench-worker";
/// The shim's name: this binary reached through a symlink called so.
const SHIM_NAME: &str = "refbox-shim";
/// The payload every box runs.
const PAYLOAD: [&str; 2] = ["/bin/sleep", "1000000"];
/// Generous deadline for one worker run (setting up 1000 boxes included).
const WORKER_DEADLINE: Duration = Duration::from_secs(600);

/// Box `i`'s id.
fn box_id(i: usize) -> String {
    format!("b{i:05}")
}

/// Box `i` is dead (its shim killed) in a recovery scene.
fn is_dead(i: usize) -> bool {
    i % 10 == 1
}

/// Box `i`'s shim is replaced by an impostor at its pid.
fn is_impostor(i: usize) -> bool {
    i % 10 == 2
}

fn quick() -> bool {
    std::env::args().any(|a| a == "--quick" || a == "--test")
}

// ---------------------------------------------------------------- worker

mod worker {
    //! What runs inside the world.

    use super::*;
    use refbox::identity::{self, HostFacts, IdentityRecord, VerifyRequest};
    use refbox::state::{self, Phase};
    use refbox::{BoxId, CreateOptions, ProcessIdentity, Runtime, Strategies, fsread, fswrite};

    /// Runs a worker or shim role if this process was started as one.
    pub fn dispatch() {
        let args: Vec<String> = std::env::args().collect();
        let argv0 = args.first().map(String::as_str).unwrap_or("");
        if Path::new(argv0).file_name().is_some_and(|n| n == SHIM_NAME) {
            std::process::exit(shim(&args[1..]));
        }
        if args.get(1).map(String::as_str) == Some(WORKER_ARG) {
            let code = match run(&args[2..]) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("worker: {e:#}");
                    1
                }
            };
            std::process::exit(code);
        }
    }

    /// `refbox-shim <box_id>`, as the real binary does it.
    fn shim(args: &[String]) -> i32 {
        let Some(Ok(id)) = args.first().map(|a| BoxId::new(a)) else {
            return 2;
        };
        match refbox::shim::run(&id) {
            Ok(code) => code.clamp(0, 255),
            Err(e) => {
                refbox::shim::say_error(&e.to_string());
                1
            }
        }
    }

    fn open(root: &Path) -> anyhow::Result<Runtime> {
        let rt = Runtime::open(root, Strategies::default())?;
        rt.host()?;
        Ok(rt)
    }

    fn run(args: &[String]) -> anyhow::Result<()> {
        let [op, root, rest @ ..] = args else {
            anyhow::bail!("usage: {WORKER_ARG} OP ROOT ...");
        };
        let root = Path::new(root);
        let arg = |i: usize| -> anyhow::Result<&str> {
            rest.get(i)
                .map(String::as_str)
                .ok_or_else(|| anyhow::anyhow!("{op}: missing argument {i}"))
        };
        match op.as_str() {
            "create" => create(root, Path::new(arg(0)?), arg(1)?.parse()?, arg(2)?.parse()?),
            op => {
                let iters: u64 = arg(0)?.parse()?;
                let (total, note) = time(root, op, iters)?;
                println!("{} {note}", total.as_nanos());
                Ok(())
            }
        }
    }

    /// Creates and starts boxes `from..to`; prints `id pid` per box.
    fn create(root: &Path, shim: &Path, from: usize, to: usize) -> anyhow::Result<()> {
        let mut rt = open(root)?;
        rt.set_shim_path(shim.to_path_buf());
        for i in from..to {
            let id = BoxId::new(&box_id(i))?;
            rt.create(&CreateOptions {
                id: id.clone(),
                argv: PAYLOAD.iter().map(|s| s.to_string()).collect(),
                env: vec![],
                secret: None,
            })?;
            rt.start(&id, None)?;
            let pid = rt
                .state(&id)?
                .pid
                .ok_or_else(|| anyhow::anyhow!("{id}: no pid after start"))?;
            println!("{id} {pid}");
        }
        Ok(())
    }

    /// A box a recovery pass finds stopped: its id, its `state.json` as it
    /// was before the pass marked it (phase `started`), its recorded pid.
    type Stopped = (BoxId, Vec<u8>, Option<i32>);

    /// Boxes that a recovery pass finds stopped.
    fn stopped_boxes(rt: &Runtime) -> anyhow::Result<Vec<Stopped>> {
        let mut out = Vec::new();
        for b in rt.list().boxes {
            if b.status != refbox::status::Status::Stopped {
                continue;
            }
            let id = BoxId::new(&b.id)?;
            let dir = rt.layout().box_dir(&id);
            let bytes = fsread::read_capped(
                &dir.join(refbox::layout::STATE),
                fsread::STATE_CAP,
                rustix_uid(),
            )?;
            let mut rec = state::parse_state(&bytes, &id)?;
            rec.phase = Phase::Started;
            out.push((id, state::format_state(&rec), b.pid));
        }
        Ok(out)
    }

    fn rustix_uid() -> u32 {
        rustix::process::geteuid().as_raw()
    }

    /// The identity record of box 0 (always live).
    fn record0(rt: &Runtime) -> anyhow::Result<(BoxId, IdentityRecord)> {
        let id = BoxId::new(&box_id(0))?;
        let path = rt.layout().box_dir(&id).join(refbox::layout::IDENTITY);
        let bytes = fsread::read_capped(&path, fsread::RECORD_CAP, rustix_uid())?;
        Ok((id, identity::parse_record(&bytes)?))
    }

    /// Times `op` `iters` times; returns the total and a note for the driver
    /// to check (what the last call found).
    fn time(root: &Path, op: &str, iters: u64) -> anyhow::Result<(Duration, String)> {
        let rt = open(root)?;
        let mut total = Duration::ZERO;
        let mut note = String::new();
        match op {
            "recover" => {
                let reset = stopped_boxes(&rt)?;
                for _ in 0..iters {
                    for (id, bytes, _) in &reset {
                        let dir = rt.layout().box_dir(id);
                        fswrite::write_atomic(&dir, refbox::layout::STATE, bytes)?;
                    }
                    let t = Instant::now();
                    let r = rt.recover();
                    total += t.elapsed();
                    let count = |a| r.boxes.iter().filter(|b| b.action == a).count();
                    use refbox::status::RecoverAction as A;
                    note = format!(
                        "adopted={} marked-stopped={} errors={}",
                        count(A::Adopted),
                        count(A::MarkedStopped),
                        r.errors.len()
                    );
                }
            }
            "list" => {
                for _ in 0..iters {
                    let t = Instant::now();
                    let r = rt.list();
                    total += t.elapsed();
                    note = format!("boxes={} errors={}", r.boxes.len(), r.errors.len());
                }
            }
            "cleanup" => {
                // Dead and recycled owners' log dirs are removed by each
                // pass: re-plant their sentinels (as their shims wrote them).
                let exe = std::env::current_exe()?;
                let replant: Vec<(PathBuf, Vec<u8>)> = stopped_boxes(&rt)?
                    .into_iter()
                    .filter_map(|(id, _, pid)| {
                        let pid = refbox::Pid::new(i64::from(pid?)).ok()?;
                        Some((
                            rt.layout().log_dir(&id),
                            refbox::sentinel::format_sentinel(
                                pid,
                                exe.as_os_str().as_encoded_bytes(),
                            ),
                        ))
                    })
                    .collect();
                for _ in 0..iters {
                    for (log, bytes) in &replant {
                        match fswrite::create_private_dir(log) {
                            Ok(()) | Err(fswrite::WriteError::AlreadyExists { .. }) => {}
                            Err(e) => return Err(e.into()),
                        }
                        fswrite::write_atomic(log, refbox::layout::SENTINEL, bytes)?;
                    }
                    let t = Instant::now();
                    let r = rt.cleanup_logs();
                    total += t.elapsed();
                    let count = |a| r.boxes.iter().filter(|b| b.action == a).count();
                    use refbox::status::CleanupAction as A;
                    note = format!(
                        "removed={} kept={} errors={}",
                        count(A::Removed),
                        count(A::Kept),
                        r.errors.len()
                    );
                }
            }
            "verify-refbox" => {
                let (id, record) = record0(&rt)?;
                let host = *rt.host()?;
                let req = VerifyRequest {
                    id: &id,
                    record: &record,
                    host: &host,
                };
                for _ in 0..iters {
                    let t = Instant::now();
                    let v = refbox::identity::verify_with_pidfd(&req);
                    let ok = matches!(v, ProcessIdentity::Verified(_));
                    drop(v);
                    total += t.elapsed();
                    anyhow::ensure!(ok, "box 0 does not verify");
                }
                note = "verified".into();
            }
            "verify-procfs" => {
                // What a start-time runtime does: read and parse
                // /proc/PID/stat, compare field 22 (and the boot id).
                let (_, record) = record0(&rt)?;
                let IdentityRecord::V2(rec) = record else {
                    anyhow::bail!("box 0 has a legacy record");
                };
                let host: HostFacts = *rt.host()?;
                for _ in 0..iters {
                    let t = Instant::now();
                    let path = PathBuf::from(format!("/proc/{}/stat", rec.pid));
                    let ok = rec.boot_id == host.boot_id
                        && fsread::read_proc(&path, 4096)
                            .ok()
                            .and_then(|b| identity::parse_stat_start_time(&b))
                            == Some(rec.start_time);
                    total += t.elapsed();
                    anyhow::ensure!(ok, "box 0: start time differs");
                }
                note = "verified".into();
            }
            "verify-pidfs" => {
                // pidfd_open + fstat: the pidfs inode names the process
                // uniquely for the whole boot; the pidfd pins it.
                let (_, record) = record0(&rt)?;
                let IdentityRecord::V2(rec) = record else {
                    anyhow::bail!("box 0 has a legacy record");
                };
                anyhow::ensure!(rt.host()?.pidfs, "no pidfs on this kernel");
                for _ in 0..iters {
                    let t = Instant::now();
                    let ok = rustix::process::pidfd_open(
                        rec.pid.to_rustix(),
                        rustix::process::PidfdFlags::empty(),
                    )
                    .and_then(|fd| rustix::fs::fstat(&fd))
                    .map(|st| st.st_ino)
                        == Ok(rec.pidfs_ino);
                    total += t.elapsed();
                    anyhow::ensure!(ok, "box 0: pidfs inode differs");
                }
                note = "verified".into();
            }
            other => anyhow::bail!("unknown op {other}"),
        }
        Ok((total, note))
    }
}

// ---------------------------------------------------------------- driver

/// One world with a refbox root of `n` boxes as a recovery scene expects.
struct Scene {
    world: World,
    root: String,
    n: usize,
    dead: usize,
    impostors: usize,
}

fn exe() -> String {
    std::env::current_exe()
        .expect("own executable")
        .display()
        .to_string()
}

impl Scene {
    /// Opens a world, creates `n` live boxes there (progress on stderr),
    /// kills 10% of the shims and replaces another 10% by impostors
    /// carrying the victim's exact argv.
    fn open(n: usize, damage: bool) -> Scene {
        let world = World::open(WorldOptions::default()).expect("world opens");
        let dir = world.root().display().to_string();
        let shim = world.host_path("bin").expect("world path");
        std::fs::create_dir_all(&shim).expect("bin dir");
        std::os::unix::fs::symlink(exe(), shim.join(SHIM_NAME)).expect("shim symlink");
        let shim = format!("{dir}/bin/{SHIM_NAME}");
        let root = format!("{dir}/root");
        let mut scene = Scene {
            world,
            root,
            n,
            dead: 0,
            impostors: 0,
        };
        let t = Instant::now();
        let mut pids = Vec::with_capacity(n);
        let chunk = 100;
        for from in (0..n).step_by(chunk) {
            let to = (from + chunk).min(n);
            let out = scene.worker(&[
                "create",
                &scene.root.clone(),
                &shim,
                &from.to_string(),
                &to.to_string(),
            ]);
            for line in out.lines() {
                let pid: i32 = line
                    .split_once(' ')
                    .and_then(|(_, p)| p.parse().ok())
                    .expect("id pid");
                pids.push(pid);
            }
            if n >= 100 {
                eprint!("\r  creating boxes: {to}/{n}");
            }
        }
        if n >= 100 {
            eprintln!(" ({:.1} s)", t.elapsed().as_secs_f64());
        }
        if damage {
            for (i, &pid) in pids.iter().enumerate() {
                let pid = Pid::new(pid).expect("pid");
                if is_dead(i) {
                    scene.world.signal(pid, Signal::KILL).expect("kill shim");
                    scene.dead += 1;
                } else if is_impostor(i) {
                    scene.impostor_at(pid, &box_id(i));
                    scene.impostors += 1;
                }
            }
        }
        scene
    }

    /// Kills the shim at `pid` and places a sleeper with its exact argv there.
    fn impostor_at(&self, pid: Pid, id: &str) {
        let kind = ImpostorKind::SameArgv {
            argv: vec![SHIM_NAME.to_string(), id.to_string()],
        };
        let placement = Placement::Replacing {
            victim: pid,
            timeout: Duration::from_secs(5),
        };
        // The pid stays taken while the dying shim's payload still names
        // its process group: retry until the deadline.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.world.impostor(&kind, placement) {
                Ok(_) => return,
                Err(ImpostorError::World(WorldError::Remote(RemoteError::PidTaken { .. })))
                    if Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("impostor at {pid}: {e}"),
            }
        }
    }

    /// Runs a worker in the world; returns its stdout.
    fn worker(&self, args: &[&str]) -> String {
        let cmd = WorldCommand::new(exe())
            .arg(WORKER_ARG)
            .args(args.iter().map(|s| s.to_string()));
        let e = self.world.run(&cmd, WORKER_DEADLINE).expect("worker runs");
        let out = String::from_utf8_lossy(&e.stdout.bytes).into_owned();
        assert!(
            matches!(e.status, doppel_harness::ExitStatus::Exited(0)),
            "worker {args:?}: {:?}; stderr: {}",
            e.status,
            String::from_utf8_lossy(&e.stderr.bytes)
        );
        out
    }

    /// Times `op` `iters` times in the world; returns the total and the note.
    fn time(&self, op: &str, iters: u64) -> (Duration, String) {
        let out = self.worker(&[op, &self.root, &iters.to_string()]);
        let (ns, note) = out.trim().split_once(' ').unwrap_or((out.trim(), ""));
        let ns: u64 = ns.parse().expect("worker prints nanoseconds");
        (Duration::from_nanos(ns), note.to_string())
    }

    /// What `recover` must find here.
    fn expected_recover(&self) -> String {
        format!(
            "adopted={} marked-stopped={} errors=0",
            self.n - self.dead - self.impostors,
            self.dead + self.impostors
        )
    }

    /// `samples` timings of one call each (for the summary).
    fn samples(&self, op: &str, samples: usize) -> Vec<Duration> {
        (0..samples).map(|_| self.time(op, 1).0).collect()
    }

    fn close(self) {
        self.world.close().expect("world closes");
    }
}

fn sizes() -> &'static [usize] {
    &[1, 10, 100, 1000]
}

/// Figures for the summary, all from this run.
#[derive(Default)]
struct Summary {
    recover: Vec<(usize, Duration)>,
    cleanup: Vec<(usize, Duration)>,
    list: Vec<(usize, Duration)>,
    verify: Vec<(&'static str, Duration)>,
    list_plants: Option<(Duration, Duration, String)>,
}

fn bench_recovery(c: &mut Criterion, summary: &mut Summary) {
    let q = quick();
    for &n in sizes() {
        let scene = Scene::open(n, true);
        let (_, note) = scene.time("recover", 1);
        assert_eq!(note, scene.expected_recover(), "recovery of {n} boxes");
        // Criterion's quick pass over 1000 boxes would take most of the CI
        // budget: there the summary's few samples stand for it.
        if !(q && n >= 1000) {
            let mut g = c.benchmark_group("refbox");
            g.sample_size(if n >= 100 { 10 } else { 20 });
            g.bench_with_input(BenchmarkId::new("recover", n), &n, |b, _| {
                b.iter_custom(|iters| scene.time("recover", iters).0)
            });
            g.bench_with_input(BenchmarkId::new("list", n), &n, |b, _| {
                b.iter_custom(|iters| scene.time("list", iters).0)
            });
            g.bench_with_input(BenchmarkId::new("cleanup_logs", n), &n, |b, _| {
                b.iter_custom(|iters| scene.time("cleanup", iters).0)
            });
            g.finish();
        }
        let k = if q { 5 } else { 21 };
        let mut r = scene.samples("recover", k);
        let mut l = scene.samples("list", k);
        let mut s = scene.samples("cleanup", k);
        summary.recover.push((n, median(&mut r).expect("samples")));
        summary.list.push((n, median(&mut l).expect("samples")));
        summary.cleanup.push((n, median(&mut s).expect("samples")));
        scene.close();
    }
}

fn bench_verify(c: &mut Criterion, summary: &mut Summary) {
    let scene = Scene::open(1, false);
    let ops = [
        ("verify-procfs", "procfs start time"),
        ("verify-pidfs", "pidfd + pidfs inode"),
        ("verify-refbox", "refbox verify_with_pidfd"),
    ];
    let mut g = c.benchmark_group("verify");
    for (op, _) in ops {
        g.bench_function(op.trim_start_matches("verify-"), |b| {
            b.iter_custom(|iters| scene.time(op, iters).0)
        });
    }
    g.finish();
    // Per call: the mean of 10 000 calls, median over 9 runs.
    for (op, label) in ops {
        let mut v: Vec<Duration> = (0..9).map(|_| scene.time(op, 10_000).0 / 10_000).collect();
        summary
            .verify
            .push((label, median(&mut v).expect("samples")));
    }
    scene.close();
}

fn bench_list_plants(c: &mut Criterion, summary: &mut Summary) {
    let n = 100;
    let scene = Scene::open(n, false);
    let clean = median(&mut scene.samples("list", 21)).expect("samples");
    // Two more boxes, whose shim.pid become a 4 GiB sparse file and a FIFO.
    let dir = scene.world.root().display().to_string();
    let shim = format!("{dir}/bin/{SHIM_NAME}");
    scene.worker(&[
        "create",
        &scene.root,
        &shim,
        &n.to_string(),
        &(n + 2).to_string(),
    ]);
    for (i, plant) in [
        (n, Plant::Oversized { size: 4 << 30 }),
        (n + 1, Plant::Fifo),
    ] {
        let rel = format!("root/{}/shim.pid", box_id(i));
        std::fs::remove_file(scene.world.host_path(&rel).expect("world path")).expect("rm");
        scene.world.plant(&rel, &plant).expect("plant");
    }
    let (_, note) = scene.time("list", 1);
    assert_eq!(
        note,
        format!("boxes={n} errors=2"),
        "list names the two plants"
    );
    let mut g = c.benchmark_group("refbox");
    g.bench_function("list_100_with_oversized_and_fifo", |b| {
        b.iter_custom(|iters| scene.time("list", iters).0)
    });
    g.finish();
    let planted = median(&mut scene.samples("list", 21)).expect("samples");
    summary.list_plants = Some((clean, planted, note));
    scene.close();
}

fn print_summary(s: &Summary) {
    println!("\nside by side, one run (medians, in-process calls on real shims in worlds):");
    println!(
        "  {:>6}  {:>10} {:>10}  {:>10} {:>10}  {:>10} {:>10}",
        "boxes", "recover", "per box", "list", "per box", "cleanup", "per box"
    );
    for (((n, r), (_, l)), (_, c)) in s.recover.iter().zip(&s.list).zip(&s.cleanup) {
        let per = |d: &Duration| human(*d / (*n as u32));
        println!(
            "  {n:>6}  {:>10} {:>10}  {:>10} {:>10}  {:>10} {:>10}",
            human(*r),
            per(r),
            human(*l),
            per(l),
            human(*c),
            per(c)
        );
    }
    for (name, pts) in [
        ("recover", &s.recover),
        ("list", &s.list),
        ("cleanup", &s.cleanup),
    ] {
        let points: Vec<(f64, f64)> = pts
            .iter()
            .map(|(n, t)| (*n as f64, t.as_secs_f64()))
            .collect();
        let Some((a, b, r2)) = fit(&points) else {
            continue;
        };
        println!(
            "  fit {name:<8} t(N) = {} + N × {}   (r² = {r2:.4})",
            human(Duration::from_secs_f64(a.max(0.0))),
            human(Duration::from_secs_f64(b.max(0.0)))
        );
    }
    println!("  one identity verification (mean of 10 000 calls, median of 9 runs):");
    let fastest = s.verify.iter().map(|v| v.1).min().unwrap_or_default();
    for (label, d) in &s.verify {
        println!(
            "    {label:<26} {:>10}   {:>5.1}× the fastest",
            human(*d),
            ratio(*d, fastest)
        );
    }
    if let Some((clean, planted, note)) = &s.list_plants {
        println!(
            "  list of 100 boxes: {} clean, {} with a 4 GiB sparse and a FIFO shim.pid planted ({note}); ratio {:.2}",
            human(*clean),
            human(*planted),
            ratio(*planted, *clean)
        );
    }
}

fn main() {
    doppel_harness::init::dispatch();
    worker::dispatch();
    if let Err(reason) = Capabilities::detect().worlds() {
        eprintln!("refbox benches skipped: {reason}");
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    let mut summary = Summary::default();
    bench_verify(&mut c, &mut summary);
    bench_list_plants(&mut c, &mut summary);
    bench_recovery(&mut c, &mut summary);
    c.final_summary();
    print_summary(&summary);
}
