//! `Runtime::stats` of the exec runtime with real processes: CPU time of
//! the container's whole process group (children included), resident
//! memory, and clear errors for stopped or unknown containers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_node::runtime::exec::{ExecConfig, ExecRuntime};
use keel_node::runtime::{ContainerId, ContainerSpec, Runtime, RuntimeError};

fn runtime(state_dir: &Path) -> Arc<dyn Runtime> {
    Arc::new(
        ExecRuntime::new(ExecConfig {
            state_dir: state_dir.to_path_buf(),
            keel_binary: PathBuf::from(env!("CARGO_BIN_EXE_keel-node-images")),
            image_dir: None,
        })
        .expect("runtime"),
    )
}

fn sh(dir: &Path, script: &str) -> ContainerSpec {
    ContainerSpec {
        pod_uid: "stats-uid".into(),
        pod_name: "pod-a".into(),
        pod_namespace: "default".into(),
        container_name: "main".into(),
        image: "keel/host".into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        args: vec![],
        env: vec![],
        working_dir: None,
        log_path: dir.join("logs/main.log"),
        image_root: None,
        resources: Default::default(),
        mounts: Vec::new(),
        security: Default::default(),
    }
}

#[tokio::test]
async fn cpu_of_children_counts_and_stopped_containers_have_none() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(&dir.path().join("state"));
    // The main process only sleeps; a child it started does the work.
    let spec = sh(
        dir.path(),
        "sh -c 'i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; sleep 100' & sleep 100",
    );
    let id = rt.start(&spec).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = None;
    loop {
        let s = rt.stats(&id).await.unwrap();
        assert!(s.memory_working_set_bytes > 0, "{s:?}");
        if s.cpu_usage_ns >= 100_000_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the child's CPU never showed: {last:?}"
        );
        last = Some(s);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rt.stop(&id, 1_000).await.unwrap();
    match rt.stats(&id).await {
        Err(RuntimeError::InvalidSpec(m)) => assert!(m.contains("not running"), "{m}"),
        other => panic!("stats of a stopped container: {other:?}"),
    }
    rt.remove(&id).await.unwrap();
    let unknown = ContainerId("nope".into());
    assert!(rt.stats(&unknown).await.is_err());
}
