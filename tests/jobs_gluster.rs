//! Batch jobs on a real GlusterFS volume: two runners, each on its own FUSE mount of one
//! replicated volume, hash uploads as `md5sum` does, run every job exactly once, and finish the jobs of a runner killed
//! mid-way. `gluster/test-volume.sh up` makes the volume and prints the mounts;
//! `CELLGATE_GLUSTER_MOUNTS=/mount/a,/mount/b` points this test at them (`make test` does both
//! as root). Without it the test fails, unless CELLGATE_SKIP_GLUSTER=1 skips it outside CI.

mod support;

use std::path::PathBuf;

use support::jobs::{
    a_killed_runners_jobs_finish_elsewhere, each_job_runs_exactly_once, md5_jobs_equal_md5sum,
    JobCluster,
};

/// The mounts named by `CELLGATE_GLUSTER_MOUNTS`, each given its own fresh subdirectory of
/// the volume (the same directory seen through each mount).
fn mounts(label: &str) -> Option<Vec<PathBuf>> {
    let Ok(list) = std::env::var("CELLGATE_GLUSTER_MOUNTS") else {
        support::prerequisite::skip_or_fail(
            "the GlusterFS jobs tests",
            "they need CELLGATE_GLUSTER_MOUNTS=/a,/b (gluster/test-volume.sh up prints it)",
            "CELLGATE_SKIP_GLUSTER",
        );
        return None;
    };
    let mounts: Vec<PathBuf> = list.split(',').map(PathBuf::from).collect();
    assert!(
        mounts.len() >= 2,
        "CELLGATE_GLUSTER_MOUNTS names two mounts: {list}"
    );
    let name = format!("{label}-{}", uuid::Uuid::new_v4());
    std::fs::create_dir(mounts[0].join(&name)).expect("the volume is writable");
    Some(mounts.iter().map(|mount| mount.join(&name)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_jobs_on_glusterfs_equal_md5sum() {
    let Some(volumes) = mounts("md5") else {
        return;
    };
    let cluster = JobCluster::start(&volumes, 2, 5).await;
    md5_jobs_equal_md5sum(&cluster.client(), &cluster.scratch, 100, 100 << 20).await;
    drop(cluster);
    let _ = std::fs::remove_dir_all(&volumes[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_mounts_run_each_job_exactly_once() {
    let Some(volumes) = mounts("once") else {
        return;
    };
    let cluster = JobCluster::start(&volumes, 2, 5).await;
    each_job_runs_exactly_once(&cluster, 200).await;
    drop(cluster);
    let _ = std::fs::remove_dir_all(&volumes[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runners_jobs_finish_on_the_other_mount() {
    let Some(volumes) = mounts("kill") else {
        return;
    };
    let mut cluster = JobCluster::start(&volumes, 2, 3).await;
    a_killed_runners_jobs_finish_elsewhere(&mut cluster, 12).await;
    drop(cluster);
    let _ = std::fs::remove_dir_all(&volumes[0]);
}
