//! Plants: each kind creates what it says; paths cannot escape the world.

mod common;

use common::{Need, open_world, world_main};
use doppel_harness::plant::{DEFAULT_OVERSIZED, Plant, PlantError};
use doppel_harness::{RedirectReason, WorldCommand, WorldPathError};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

fn every_plant_kind_creates_what_it_says() {
    let w = open_world();
    let p = w
        .plant(
            "state/big.json",
            &Plant::Oversized {
                size: DEFAULT_OVERSIZED,
            },
        )
        .unwrap();
    let m = std::fs::metadata(&p.host_path).unwrap();
    assert!(m.len() >= 1 << 30);
    assert!(m.blocks() < 16, "sparse: {} blocks", m.blocks());
    assert_eq!(p.world_path, w.root().join("state/big.json"));

    let p = w.plant("state/fifo", &Plant::Fifo).unwrap();
    assert!(
        std::fs::metadata(&p.host_path)
            .unwrap()
            .file_type()
            .is_fifo()
    );

    let p = w.plant("state/link", &Plant::SymlinkOutside).unwrap();
    let out = p.outside.clone().unwrap();
    assert_eq!(std::fs::read_link(&p.host_path).unwrap(), out.world_path);
    assert!(out.unchanged());
    std::fs::write(&out.host_path, b"changed").unwrap();
    assert!(!out.unchanged(), "the check can fail");

    let p = w.plant("state/dangling", &Plant::DanglingSymlink).unwrap();
    assert!(
        std::fs::symlink_metadata(&p.host_path)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(std::fs::metadata(&p.host_path).is_err());

    let p = w
        .plant("state/dir.json", &Plant::DirectoryInsteadOfFile)
        .unwrap();
    assert!(std::fs::metadata(&p.host_path).unwrap().is_dir());

    let p = w
        .plant("state/random", &Plant::RandomBytes { len: 4096 })
        .unwrap();
    assert_eq!(std::fs::metadata(&p.host_path).unwrap().len(), 4096);

    let p = w.plant("state/empty", &Plant::Empty).unwrap();
    assert_eq!(std::fs::metadata(&p.host_path).unwrap().len(), 0);

    let p = w
        .plant(
            "state/trunc.json",
            &Plant::Truncated {
                of: br#"{"version":2,"pid":42}"#.to_vec(),
                keep: 10,
            },
        )
        .unwrap();
    assert_eq!(std::fs::read(&p.host_path).unwrap(), br#"{"version""#);

    let p = w
        .plant(
            "g/file",
            &Plant::GroupWritableParent {
                contents: b"x".to_vec(),
            },
        )
        .unwrap();
    let mode = std::fs::metadata(p.host_path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o070, 0o070);
    assert_eq!(mode & 0o002, 0);

    let p = w
        .plant(
            "o/file",
            &Plant::WorldWritableParent {
                contents: b"x".to_vec(),
            },
        )
        .unwrap();
    let mode = std::fs::metadata(p.host_path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o002, 0o002);

    match w.plant(
        "state/owned",
        &Plant::WrongOwner {
            uid: 4242,
            contents: b"x".to_vec(),
        },
    ) {
        Ok(p) => assert_eq!(std::fs::metadata(&p.host_path).unwrap().uid(), 4242),
        Err(PlantError::NotStaged { reason }) => {
            assert!(
                w.in_user_namespace(),
                "only a user namespace excuses this: {reason}"
            );
            eprintln!("wrong owner not staged: {reason}");
        }
        Err(e) => panic!("{e:?}"),
    }
}

fn planted_files_are_visible_inside_the_world() {
    let w = open_world();
    let p = w.plant("state/empty", &Plant::Empty).unwrap();
    let exit = w
        .run(
            &doppel_harness::WorldCommand::new("/bin/sh").args([
                "-c",
                &format!("test -f {} && echo yes", p.world_path.display()),
            ]),
            std::time::Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(exit.stdout.bytes, b"yes\n");
}

fn paths_outside_the_world_are_typed_errors() {
    let w = open_world();
    for bad in ["/etc/passwd", "../escape", "a/../../b", ""] {
        let err = w.plant(bad, &Plant::Empty).unwrap_err();
        assert!(
            matches!(err, PlantError::PathOutsideWorld(_)),
            "{bad}: {err:?}"
        );
        assert!(w.host_path(bad).is_err());
    }
}

/// Every entry under `dir` (host path), as names, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn symlinked_dirs_are_never_followed_out_of_the_world() {
    let w = open_world();
    // A host dir outside the world's work dir, which the world can see (it
    // shares the host's root filesystem): what a runtime's symlink to /etc
    // would expose.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("passwd"), b"keep me\n").unwrap();
    // Made by a world process, the way a runtime under test would.
    let root = w.root().display().to_string();
    let out = outside.path().display().to_string();
    let script = format!(
        "mkdir -p {root}/r && ln -s {out} {root}/r/box && ln -s {out}/passwd {root}/r/state.json"
    );
    let exit = w
        .run(
            &WorldCommand::new("/bin/sh").args(["-c", &script]),
            Duration::from_secs(10),
        )
        .unwrap();
    assert!(exit.status.success(), "{exit:?}");

    let kinds = [
        Plant::Oversized {
            size: DEFAULT_OVERSIZED,
        },
        Plant::Fifo,
        Plant::SymlinkOutside,
        Plant::DanglingSymlink,
        Plant::DirectoryInsteadOfFile,
        Plant::RandomBytes { len: 16 },
        Plant::Empty,
        Plant::GroupWritableParent {
            contents: b"x".to_vec(),
        },
    ];
    for plant in &kinds {
        for rel in ["r/box/state.json", "r/box/deeper/state.json"] {
            match w.plant(rel, plant) {
                Err(PlantError::Redirected(r)) => {
                    assert_eq!(r.reason, RedirectReason::Symlink, "{plant:?} at {rel}: {r}");
                    assert_eq!(r.component, w.root().join("r/box"), "{plant:?} at {rel}");
                    assert_eq!(r.path, w.root().join(rel));
                    assert!(r.to_string().contains("symlink"), "{r}");
                }
                other => panic!("{plant:?} at {rel}: expected Redirected, got {other:?}"),
            }
        }
    }
    // A final component that is a symlink is not followed either.
    for plant in [
        Plant::Empty,
        Plant::Oversized { size: 1 << 20 },
        Plant::RandomBytes { len: 16 },
    ] {
        match w.plant("r/state.json", &plant) {
            Err(PlantError::Redirected(r)) => {
                assert_eq!(r.reason, RedirectReason::Symlink);
                assert_eq!(r.component, w.root().join("r/state.json"));
            }
            other => panic!("{plant:?} over a symlink: expected Redirected, got {other:?}"),
        }
    }
    // The other host-side helpers refuse the same way.
    assert!(matches!(
        w.write_file("r/box/f", b"x"),
        Err(WorldPathError::Redirected(_))
    ));
    assert!(matches!(
        w.write_file("r/state.json", b"x"),
        Err(WorldPathError::Redirected(_))
    ));
    assert!(matches!(
        w.read_file("r/state.json", 4096),
        Err(WorldPathError::Redirected(_))
    ));
    assert!(matches!(
        w.create_dir_all("r/box/d"),
        Err(WorldPathError::Redirected(_))
    ));
    assert!(matches!(
        w.host_path("r/box/state.json"),
        Err(WorldPathError::Redirected(_))
    ));
    // The final component may be a symlink for host_path (to look at it).
    assert!(w.host_path("r/box").is_ok());

    assert_eq!(
        entries(outside.path()),
        ["passwd"],
        "nothing landed outside"
    );
    assert_eq!(
        std::fs::read(outside.path().join("passwd")).unwrap(),
        b"keep me\n"
    );
    // The check can fail: the same plant without the symlink does land.
    std::fs::remove_file(w.host_path("r/box").unwrap()).unwrap();
    w.plant("r/box/state.json", &Plant::Empty).unwrap();
    assert_eq!(w.read_file("r/box/state.json", 16).unwrap(), b"");
}

fn file_helpers_stay_beneath_and_refuse_fifos() {
    let w = open_world();
    w.create_dir_all("a/b").unwrap();
    w.write_file("a/b/f", b"hello").unwrap();
    assert_eq!(w.read_file("a/b/f", 5).unwrap(), b"hello");
    assert!(matches!(
        w.read_file("a/b/f", 4),
        Err(WorldPathError::TooLarge { cap: 4, .. })
    ));
    w.plant("a/fifo", &Plant::Fifo).unwrap();
    // Neither blocks on a FIFO without a writer / reader.
    assert!(matches!(
        w.read_file("a/fifo", 16),
        Err(WorldPathError::NotAFile { .. })
    ));
    assert!(w.write_file("a/fifo", b"x").is_err());
    assert!(matches!(
        w.plant("a/fifo", &Plant::Empty),
        Err(PlantError::Io { .. } | PlantError::NotAFile { .. })
    ));
    assert!(matches!(
        w.write_file("../x", b"x"),
        Err(WorldPathError::Outside(_))
    ));
}

fn plants_replace_whatever_is_there_without_following_it() {
    let w = open_world();
    // A file outside the box dir that a followed link would reach.
    w.write_file("outside", b"keep me").unwrap();
    let outside = w.world_path("outside").unwrap();
    // A directory tree, with a symlink out of it, where a record goes.
    w.create_dir_all("r/box/state.json/sub").unwrap();
    w.plant(
        "r/box/state.json/sub/link",
        &Plant::Symlink {
            target: outside.clone(),
        },
    )
    .unwrap();
    w.plant("r/box/state.json/fifo", &Plant::Fifo).unwrap();
    let p = w
        .plant_replacing("r/box/state.json", &Plant::Empty)
        .unwrap();
    assert!(std::fs::symlink_metadata(&p.host_path).unwrap().is_file());
    assert_eq!(
        w.read_file("outside", 64).unwrap(),
        b"keep me",
        "not followed"
    );
    // A FIFO and a symlink are replaced, not opened or followed.
    w.plant_replacing("r/box/state.json", &Plant::Fifo).unwrap();
    let p = w
        .plant_replacing(
            "r/box/state.json",
            &Plant::Symlink {
                target: outside.clone(),
            },
        )
        .unwrap();
    assert_eq!(std::fs::read_link(&p.host_path).unwrap(), outside);
    w.plant_replacing("r/box/state.json", &Plant::Empty)
        .unwrap();
    assert_eq!(w.read_file("outside", 64).unwrap(), b"keep me");
    // Half of the record that is there.
    w.write_file("r/box/state.json", b"0123456789").unwrap();
    w.plant_replacing("r/box/state.json", &Plant::HalfOfExisting)
        .unwrap();
    assert_eq!(w.read_file("r/box/state.json", 64).unwrap(), b"01234");
    // Nothing there: planted all the same; a symlinked parent still refused.
    w.plant_replacing("r/new/state.json", &Plant::Empty)
        .unwrap();
    std::os::unix::fs::symlink("/etc", w.host_path("r/etc-link").unwrap()).unwrap();
    assert!(matches!(
        w.plant_replacing("r/etc-link/passwd", &Plant::Empty),
        Err(PlantError::Redirected(_))
    ));
    assert_eq!(Plant::HalfOfExisting.to_string(), "truncated");
    assert_eq!(
        Plant::Oversized { size: 1 << 30 }.to_string(),
        "sparse 1024 MiB"
    );
}

world_main!(
    Need::Worlds => [
        plants_replace_whatever_is_there_without_following_it,
        symlinked_dirs_are_never_followed_out_of_the_world,
        file_helpers_stay_beneath_and_refuse_fifos,
        every_plant_kind_creates_what_it_says,
        planted_files_are_visible_inside_the_world,
        paths_outside_the_world_are_typed_errors,
    ],
);
