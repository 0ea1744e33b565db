//! World benches: open + close, `spawn_at`, and placing a process at a
//! recycled PID by natural wraparound (the slow way users fake PID reuse
//! today) versus `spawn_at`.
//!
//! Besides criterion's own report, the run ends with a side-by-side summary of
//! medians and the wraparound/spawn_at ratio, both measured in this run.
//!
//! `cargo bench -p doppel-benches --bench world` (add `-- --quick` for a brief pass).

use criterion::{BatchSize, Criterion, criterion_group};
use doppel_benches::{human, median, ratio};
use doppel_harness::{Capabilities, Pid, World, WorldCommand, WorldOptions};
use std::time::{Duration, Instant};

/// pid_max of the wraparound world: the Linux default, so the slow way has to
/// go round a realistic PID space.
const WRAP_PID_MAX: i32 = 32768;

fn skip_reason() -> Option<String> {
    Capabilities::detect().worlds().err()
}

/// A process that exits at once: what is measured is placement, not the payload.
fn quick_exit() -> WorldCommand {
    WorldCommand::new("/bin/true")
}

fn world_opts() -> WorldOptions {
    let mut opts = WorldOptions::default();
    if doppel_harness::init::pid_max_is_per_namespace() {
        opts.pid_max = Some(WRAP_PID_MAX);
    }
    opts
}

/// Frees `pid` again: waits for the placed process (it exits at once).
fn reap(world: &World, pid: Pid) {
    world
        .wait_or_kill(pid, Duration::from_secs(5))
        .expect("placed process ends");
}

fn bench_open_close(c: &mut Criterion) {
    c.bench_function("world/open_close", |b| {
        b.iter(|| {
            World::open(WorldOptions::default())
                .expect("world opens")
                .close()
                .expect("world closes")
        })
    });
}

fn bench_spawn_at(c: &mut Criterion) {
    let world = World::open(world_opts()).expect("world opens");
    let target = Pid::new(4242).expect("valid pid");
    c.bench_function("world/spawn_at", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let s = world.spawn_at(target, &quick_exit()).expect("spawn_at");
                total += t.elapsed();
                assert_eq!(s.pid, target);
                reap(&world, s.pid);
            }
            total
        })
    });
    world.close().expect("world closes");
}

/// A freshly recycled PID: a victim is started the ordinary way and reaped,
/// so its PID is free and the kernel's PID counter sits just past it, as after
/// a real death. The slow way then has to go once round the whole PID space.
///
/// A new world's counter starts at 1 and a wrap restarts it at 300, so a
/// victim below 300 could never be reached again: the counter is first moved
/// past that (by wraparound itself; `spawn_at` would not move the counter).
fn recycled_pid(world: &World) -> Pid {
    let mut victim = world.spawn(&quick_exit()).expect("victim");
    if victim.pid.get() < 1000 {
        reap(world, victim.pid);
        let w = world
            .place_by_wraparound(Pid::new(1000).expect("valid pid"), &quick_exit(), None)
            .expect("advance the PID counter");
        reap(world, w.spawned.pid);
        victim = world.spawn(&quick_exit()).expect("victim");
    }
    reap(world, victim.pid);
    victim.pid
}

fn bench_recycled_pid(c: &mut Criterion) {
    let world = World::open(world_opts()).expect("world opens");
    let mut group = c.benchmark_group("recycled_pid");
    group.sample_size(10);
    group.bench_function("wraparound", |b| {
        b.iter_batched(
            || recycled_pid(&world),
            |pid| {
                let w = world
                    .place_by_wraparound(pid, &quick_exit(), None)
                    .expect("wraparound placement");
                reap(&world, w.spawned.pid);
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("spawn_at", |b| {
        b.iter_batched(
            || recycled_pid(&world),
            |pid| {
                let s = world.spawn_at(pid, &quick_exit()).expect("spawn_at");
                reap(&world, s.pid);
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
    world.close().expect("world closes");
}

/// The side-by-side summary: both ways measured here, in this run, in one world.
fn summary() {
    let world = World::open(world_opts()).expect("world opens");
    let quick = std::env::args().any(|a| a == "--quick" || a == "--test");
    let (wraps, spawns) = if quick { (2, 50) } else { (7, 201) };

    let mut open_close = Vec::new();
    for _ in 0..spawns {
        let t = Instant::now();
        World::open(WorldOptions::default())
            .and_then(World::close)
            .expect("world opens and closes");
        open_close.push(t.elapsed());
    }

    let mut wrap = Vec::new();
    let mut forks = Vec::new();
    let mut fast = Vec::new();
    for _ in 0..wraps {
        let pid = recycled_pid(&world);
        let t = Instant::now();
        let w = world
            .place_by_wraparound(pid, &quick_exit(), None)
            .expect("wraparound placement");
        wrap.push(t.elapsed());
        forks.push(w.forks);
        reap(&world, w.spawned.pid);
    }
    for _ in 0..spawns {
        let pid = recycled_pid(&world);
        let t = Instant::now();
        let s = world.spawn_at(pid, &quick_exit()).expect("spawn_at");
        fast.push(t.elapsed());
        assert_eq!(s.pid, pid, "spawn_at placed the exact PID");
        reap(&world, s.pid);
    }
    let pid_max = world.pid_max();
    world.close().expect("world closes");

    let oc = median(&mut open_close).expect("samples");
    let w = median(&mut wrap).expect("samples");
    let f = median(&mut fast).expect("samples");
    forks.sort_unstable();
    println!("\nside by side, one run (medians):");
    println!(
        "  world open+close          {:>10}   ({} samples)",
        human(oc),
        open_close.len()
    );
    println!(
        "  recycled PID, wraparound  {:>10}   ({} samples, pid_max {pid_max}, median {} forks)",
        human(w),
        wrap.len(),
        forks[forks.len() / 2]
    );
    println!(
        "  recycled PID, spawn_at    {:>10}   ({} samples)",
        human(f),
        fast.len()
    );
    println!("  wraparound / spawn_at     {:>9.0}×", ratio(w, f));
}

criterion_group!(
    benches,
    bench_open_close,
    bench_spawn_at,
    bench_recycled_pid
);

fn main() {
    // Lets this binary serve as the worlds' init and impostor (cargo bench
    // does not build the harness's own binaries).
    doppel_harness::init::dispatch();
    if let Some(reason) = skip_reason() {
        eprintln!("world benches skipped: {reason}");
        return;
    }
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
    summary();
}
