//! Ad-hoc timings of the harness (not asserted anywhere; the lead's criterion
//! benches are the tracked numbers): world open+close, spawn_at, wraparound
//! placement at the default pid_max, same-tick success rate.
//!
//! `cargo run --release -p doppel-harness --example harness_measure`

use doppel_harness::{Pid, StartTime, World, WorldCommand, WorldOptions};
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    doppel_harness::init::dispatch();
    if let Err(r) = doppel_harness::Capabilities::detect().worlds() {
        eprintln!("cannot measure: {r}");
        return Ok(());
    }
    // Warm up (page cache, first exec).
    drop(World::open(WorldOptions::default())?);

    let open_close: Vec<Duration> = (0..100)
        .map(|_| {
            let t = Instant::now();
            let w = World::open(WorldOptions::default()).expect("open");
            w.close().expect("close");
            t.elapsed()
        })
        .collect();
    println!("world open+close: median {:?} (n=100)", median(open_close));

    let w = World::open(WorldOptions::default())?;
    let cmd = WorldCommand::new("/bin/true");
    let mut spawn_at = Vec::new();
    for i in 0..500 {
        let pid = Pid::new(1000 + i * 13)?;
        let t = Instant::now();
        let s = w.spawn_at(pid, &cmd)?;
        spawn_at.push(t.elapsed());
        assert_eq!(s.pid, pid);
        w.wait(s.pid, Duration::from_secs(10))?;
    }
    let spawn_at_median = median(spawn_at);
    println!(
        "spawn_at (clone3 set_tid: {}): median {:?} (n=500)",
        w.uses_set_tid(),
        spawn_at_median
    );

    let mut plain = Vec::new();
    for _ in 0..500 {
        let t = Instant::now();
        let s = w.spawn(&cmd)?;
        plain.push(t.elapsed());
        w.wait(s.pid, Duration::from_secs(10))?;
    }
    println!("spawn (no placement): median {:?} (n=500)", median(plain));

    let nslp = World::open(WorldOptions {
        force_ns_last_pid: true,
        ..WorldOptions::default()
    })?;
    let mut v = Vec::new();
    for i in 0..500 {
        let pid = Pid::new(1000 + i * 13)?;
        let t = Instant::now();
        let s = nslp.spawn_at(pid, &cmd)?;
        v.push(t.elapsed());
        nslp.wait(s.pid, Duration::from_secs(10))?;
    }
    println!("spawn_at (ns_last_pid): median {:?} (n=500)", median(v));
    drop(nslp);

    // Wraparound at pid_max 32768: a victim born naturally at 1000 (so the
    // PID counter has passed it) dies; wait for the counter to come round.
    let ww = World::open(WorldOptions {
        pid_max: Some(32768),
        ..WorldOptions::default()
    })?;
    let victim = ww.place_by_wraparound(Pid::new(1000)?, &cmd, None)?.spawned;
    ww.wait(victim.pid, Duration::from_secs(10))?;
    let t = Instant::now();
    let placed = ww.place_by_wraparound(victim.pid, &cmd, None)?;
    let wrap = t.elapsed();
    println!(
        "wraparound placement at pid_max {}: {:?}, {} forks ({:.0}x spawn_at median)",
        ww.pid_max(),
        wrap,
        placed.forks,
        wrap.as_secs_f64() / spawn_at_median.as_secs_f64()
    );
    drop(ww);

    let victim = WorldCommand::new("/bin/sleep").arg("1000");
    let (mut staged, mut first, mut attempts) = (0, 0, 0u32);
    let n = 200;
    for _ in 0..n {
        if let Ok(s) = w.stage_same_tick(&victim, &victim, 20) {
            staged += 1;
            attempts += s.attempts;
            if s.attempts == 1 {
                first += 1;
            }
            w.signal(s.pid, doppel_harness::Signal::KILL)?;
            w.wait(s.pid, Duration::from_secs(10))?;
        }
    }
    println!(
        "same tick: {staged}/{n} staged within 20 attempts, {first}/{n} on the first attempt, \
         {:.2} attempts on average (tick = 1/{} s)",
        f64::from(attempts) / f64::from(staged.max(1)),
        StartTime::ticks_per_second()
    );
    Ok(())
}
