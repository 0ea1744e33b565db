//! Plants: each kind creates what it says; paths cannot escape the world.

mod common;

use common::{Need, open_world, world_main};
use doppel_harness::plant::{DEFAULT_OVERSIZED, Plant, PlantError};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

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

world_main!(
    Need::Worlds => [
        every_plant_kind_creates_what_it_says,
        planted_files_are_visible_inside_the_world,
        paths_outside_the_world_are_typed_errors,
    ],
);
