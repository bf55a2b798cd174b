//! A full disk: appends fail with `StorageFull`, nothing already stored is harmed, the log is
//! not poisoned (a failed write is undone, unlike a failed fsync), and appends succeed again once
//! space returns. Over the simulated directory (a byte budget, and "full" injected at every
//! write of a workload in turn) and on a real 2 MiB tmpfs where this process may mount one.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use weir_storage::io::sim::{CrashMode, SimDirectory};
use weir_storage::{Batch, Error, LogConfig, PartitionLog};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 3_000,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

fn read_all(log: &PartitionLog) -> Vec<Vec<u8>> {
    log.reader()
        .read(0, usize::MAX)
        .expect("read")
        .iter()
        .map(|batch| batch.as_bytes().to_vec())
        .collect()
}

/// Appends and syncs one batch at a time until the disk is full, keeping what was confirmed.
fn fill_until_full(log: &mut PartitionLog, confirmed: &mut Vec<Vec<u8>>) -> Error {
    for round in 0..100_000 {
        let batch = common::batch(2, round, 90);
        let appended = log.append(&batch, 0).expect("append only buffers");
        match log.sync() {
            Ok(()) => confirmed.push(common::stored_bytes(&batch, appended.base_offset)),
            Err(error) => return error,
        }
    }
    panic!("the disk never filled up");
}

/// A byte budget runs out: `StorageFull`, earlier data intact, recovery once space returns.
#[test]
fn a_full_disk_refuses_appends_and_harms_nothing() {
    let directory = SimDirectory::new(1);
    let (mut log, _) = PartitionLog::open(directory.clone(), config()).expect("open");
    directory.set_capacity(Some(20_000));
    let mut confirmed = Vec::new();
    let error = fill_until_full(&mut log, &mut confirmed);
    assert!(matches!(error, Error::StorageFull { .. }), "{error:?}");
    assert!(!log.is_poisoned());
    assert_eq!(read_all(&log), confirmed);
    // Still full: the next attempt fails the same way and still harms nothing.
    let batch = common::batch(2, 0, 90);
    log.append(&batch, 0).expect("append");
    assert!(matches!(log.sync(), Err(Error::StorageFull { .. })));
    assert_eq!(read_all(&log), confirmed);
    // Space returns.
    directory.set_capacity(None);
    let appended = log.append(&batch, 0).expect("append");
    log.sync().expect("sync once space returned");
    confirmed.push(common::stored_bytes(&batch, appended.base_offset));
    assert_eq!(read_all(&log), confirmed);
    drop(log);
    directory.crash(CrashMode::TearUnsynced);
    let (log, report) = PartitionLog::open(directory, config()).expect("reopen");
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(read_all(&log), confirmed);
}

/// "No space" at each write of a workload in turn (segment data, index files at a roll): each
/// time the confirmed data survives a torn crash and the log keeps working afterwards.
#[test]
fn storage_full_at_any_write_loses_nothing_confirmed() {
    let workload = |directory: &Arc<SimDirectory>| -> Vec<Vec<u8>> {
        let (mut log, _) = PartitionLog::open(directory.clone(), config()).expect("open");
        let mut confirmed: Vec<Vec<u8>> = Vec::new();
        for round in 0..40 {
            let mut group = Vec::new();
            for index in 0..3 {
                let batch = common::batch(2, round * 3 + index, 120);
                let appended = log.append(&batch, 0).expect("append");
                group.push(common::stored_bytes(&batch, appended.base_offset));
            }
            match log.sync() {
                Ok(()) => confirmed.extend(group),
                Err(Error::StorageFull { .. }) => {
                    assert!(!log.is_poisoned());
                    assert_eq!(read_all(&log), confirmed);
                }
                Err(error) => panic!("unexpected {error:?}"),
            }
        }
        confirmed
    };
    let probe = SimDirectory::new(0);
    workload(&probe);
    let writes = probe.write_count();
    for failing in 0..writes {
        let directory = SimDirectory::new(failing);
        directory.fail_write_with_storage_full(failing);
        let confirmed = workload(&directory);
        directory.crash(CrashMode::TearUnsynced);
        let (log, _) = PartitionLog::open(directory, config()).expect("reopen");
        assert_eq!(read_all(&log), confirmed, "full at write {failing}");
    }
}

/// The same on a real file system: a 2 MiB tmpfs filled to the brim, then space freed by
/// deleting a ballast file. Needs permission to mount; skipped (with the reason printed)
/// where that is refused.
#[test]
fn a_full_tmpfs_refuses_appends_and_recovers_when_space_returns() {
    let temporary = tempfile::tempdir().expect("temporary directory");
    let mount_point = temporary.path();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(mount_point)
        .output();
    match mounted {
        Ok(output) if output.status.success() => {}
        Ok(output) => {
            eprintln!(
                "skipping the tmpfs disk-full test: mount refused: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
            return;
        }
        Err(error) => {
            eprintln!("skipping the tmpfs disk-full test: cannot run mount: {error}");
            return;
        }
    }
    let result = std::panic::catch_unwind(|| run_on_full_file_system(mount_point));
    let unmounted = Command::new("umount").arg(mount_point).status();
    assert!(
        unmounted.is_ok_and(|status| status.success()),
        "umount failed"
    );
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn run_on_full_file_system(mount_point: &Path) {
    let ballast = mount_point.join("ballast");
    std::fs::write(&ballast, vec![0u8; 512 << 10]).expect("ballast");
    let log_path = mount_point.join("log");
    let config = LogConfig {
        segment_bytes_max: 256 << 10,
        ..LogConfig::default()
    };
    let (mut log, _) = PartitionLog::open_path(&log_path, config.clone()).expect("open");
    let mut confirmed = Vec::new();
    let error = fill_until_full(&mut log, &mut confirmed);
    assert!(matches!(error, Error::StorageFull { .. }), "{error:?}");
    assert!(!log.is_poisoned());
    assert!(
        confirmed.len() > 100,
        "only {} batches fit",
        confirmed.len()
    );
    assert_eq!(read_all(&log), confirmed);

    std::fs::remove_file(&ballast).expect("free space");
    let batch: Batch = common::batch(2, 0, 90);
    for _ in 0..100 {
        let appended = log.append(&batch, 0).expect("append");
        log.sync().expect("sync once space returned");
        confirmed.push(common::stored_bytes(&batch, appended.base_offset));
    }
    drop(log);
    let (log, report) = PartitionLog::open_path(&log_path, config).expect("reopen");
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(read_all(&log), confirmed);
}

/// Issue 10 #22: the metadata store on a full disk. redb refuses every write after a failed
/// commit until reopened; the store must answer `StorageFull` (never `Poisoned`, which tells
/// the operator to restart) and work again by itself once space returns, keeping every
/// durable write. On a 2 MiB tmpfs; skipped where this process may not mount.
#[test]
fn a_full_disk_makes_the_metadata_store_answer_storage_full_and_recover() {
    let temporary = tempfile::tempdir().expect("temporary directory");
    let mount_point = temporary.path();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(mount_point)
        .output();
    match mounted {
        Ok(output) if output.status.success() => {}
        Ok(output) => {
            eprintln!(
                "skipping the metadata disk-full test: mount refused: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
            return;
        }
        Err(error) => {
            eprintln!("skipping the metadata disk-full test: cannot run mount: {error}");
            return;
        }
    }
    let result = std::panic::catch_unwind(|| fill_the_metadata_store(mount_point));
    let unmounted = Command::new("umount").arg(mount_point).status();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    assert!(
        unmounted.is_ok_and(|status| status.success()),
        "umount failed"
    );
}

fn fill_the_metadata_store(mount_point: &Path) {
    use weir_storage::{MetaOp, MetaStore};
    let put = |key: u32, len: usize| MetaOp::Put {
        table: "positions",
        key: key.to_be_bytes().to_vec(),
        value: vec![key as u8; len],
    };
    let store = MetaStore::open(&mount_point.join("meta.redb")).expect("open");
    let ballast = mount_point.join("ballast");
    std::fs::write(&ballast, vec![0u8; 1 << 20]).expect("ballast");
    let mut durable = Vec::new();
    let mut key = 0;
    let full = loop {
        assert!(key < 10_000, "the disk never filled up");
        match store.write(&[put(key, 16 << 10)], true) {
            Ok(()) => durable.push(key),
            Err(error) => break error,
        }
        key += 1;
    };
    assert!(matches!(full, Error::StorageFull { .. }), "{full:?}");
    for attempt in 0..3 {
        let again = store.write(&[put(1_000_000 + attempt, 16 << 10)], true);
        assert!(
            matches!(again, Err(Error::StorageFull { .. })),
            "a full disk is reported as full, not as poison: {again:?}"
        );
    }
    std::fs::remove_file(&ballast).expect("free space");
    // The store reopens itself at most once a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match store.write(&[put(2_000_000, 16)], true) {
            Ok(()) => break,
            Err(Error::StorageFull { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(error) => panic!("the store did not recover once space returned: {error:?}"),
        }
    }
    for key in durable {
        assert!(
            store
                .get("positions", &key.to_be_bytes())
                .expect("read")
                .is_some(),
            "durable write {key} kept"
        );
    }
    drop(store);
    let reopened = MetaStore::open(&mount_point.join("meta.redb")).expect("reopen");
    assert!(
        reopened
            .get("positions", &2_000_000u32.to_be_bytes())
            .unwrap()
            .is_some()
    );
}
