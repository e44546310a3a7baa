//! A real Kubernetes control plane for the tests: etcd, kube-apiserver and
//! kube-controller-manager v1.28 on free loopback ports (envtest's idea, plus the
//! controller manager, so Deployments get ReplicaSets and real, lagging status), and a
//! Pod-readiness driver standing in for the kubelet.
//!
//! The binaries come from `$SALVE_TEST_KUBE_ASSETS` (the directory
//! `../shared/kube/unpack.sh` prints; `etcd` from there or from PATH). Missing: a test
//! says so loudly and skips on a laptop, and fails under CI.
//!
//! One control plane per test binary, started by the first test that asks for it and
//! shared by the others; each test works in a namespace of its own ([`TestNamespace`],
//! deleted on drop). The processes are started from one long-lived thread with
//! `PR_SET_PDEATHSIG`, so they are killed when the test binary exits, however it exits.
//!
//! The readiness driver ("fake kubelet") registers one Node, binds every unscheduled Pod
//! to it and marks bound Pods Running and Ready, except the Pods a test holds un-Ready
//! ([`ControlPlane::hold_unready`]) so that a rollout stalls. [`ControlPlane::pause_controllers`]
//! stops the controller manager (SIGSTOP) to simulate controller lag: status then stays
//! exactly as it was before a write until [`ControlPlane::resume_controllers`].

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

/// A running control plane.
pub struct ControlPlane {
    /// `https://127.0.0.1:PORT`.
    pub server: String,
    /// Where certificates, kubeconfigs, data and logs live.
    pub dir: PathBuf,
    /// A kubeconfig for the admin user (`system:masters`).
    pub admin_kubeconfig: PathBuf,
    /// How long start-up took, from the first process to a ready control plane.
    pub started_in: Duration,
    controller_manager: u32,
    held: Arc<Mutex<Vec<String>>>,
    runtime: tokio::runtime::Handle,
}

static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

/// The kube-apiserver and kube-controller-manager directory, if it is set and complete.
fn assets() -> Result<PathBuf, String> {
    let dir = std::env::var("SALVE_TEST_KUBE_ASSETS").map_err(|_| {
        "SALVE_TEST_KUBE_ASSETS is not set (run ../shared/kube/unpack.sh and export the directory it prints)".to_owned()
    })?;
    let dir = PathBuf::from(dir);
    for b in ["kube-apiserver", "kube-controller-manager"] {
        if !dir.join(b).is_file() {
            return Err(format!("{} has no {b}", dir.display()));
        }
    }
    Ok(dir)
}

fn etcd_binary(assets: &Path) -> Result<PathBuf, String> {
    let local = assets.join("etcd");
    if local.is_file() {
        return Ok(local);
    }
    if super::installed("etcd", &["--version"]) {
        return Ok(PathBuf::from("etcd"));
    }
    Err("no etcd in SALVE_TEST_KUBE_ASSETS or on PATH (Debian package etcd-server)".into())
}

impl ControlPlane {
    /// The shared control plane, started on first use; `None` (after saying so loudly)
    /// when its binaries are missing on a laptop. Under CI a missing binary fails.
    pub fn get() -> Option<&'static ControlPlane> {
        let shared = SHARED.get_or_init(|| {
            let assets = assets()?;
            let etcd = etcd_binary(&assets)?;
            start(&assets, &etcd).map_err(|e| format!("the control plane did not start: {e}"))
        });
        match shared {
            Ok(cp) => Some(cp),
            Err(e) if e.starts_with("the control plane did not start") => panic!("{e}"),
            Err(e) => {
                super::component_missing(e, "this real-control-plane test");
                None
            }
        }
    }

    /// A client acting as the cluster admin, on the calling test's runtime.
    pub async fn client(&self) -> kube::Client {
        client_from(&self.admin_kubeconfig).await
    }

    /// A fresh namespace for one test, deleted when the value is dropped.
    pub async fn namespace(&'static self, prefix: &str) -> TestNamespace {
        let name = format!(
            "{prefix}-{}",
            &uuid::Uuid::now_v7().simple().to_string()[24..]
        );
        let client = self.client().await;
        let api: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        api.create(&PostParams::default(), &ns).await.unwrap();
        // Pods are admitted only once the namespace has its default ServiceAccount.
        let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client, &name);
        let sa = serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap();
        let _ = sas.create(&PostParams::default(), &sa).await;
        TestNamespace { name, plane: self }
    }

    /// Keeps the Pods whose `namespace/name` starts with `prefix` and that are not Ready
    /// yet (new ones) Running but never Ready, so a rollout to them never finishes.
    pub fn hold_unready(&self, prefix: &str) {
        self.held.lock().unwrap().push(prefix.to_owned());
    }

    /// Lets held Pods become Ready again.
    pub fn release(&self, prefix: &str) {
        self.held.lock().unwrap().retain(|p| p != prefix);
    }

    /// Stops the controller manager: status stops following writes (controller lag).
    pub fn pause_controllers(&self) {
        signal(self.controller_manager, libc::SIGSTOP);
    }

    /// Lets the controller manager catch up.
    pub fn resume_controllers(&self) {
        signal(self.controller_manager, libc::SIGCONT);
    }

    /// A token for `namespace/service_account` (the TokenRequest API, as kubelet gets one).
    pub async fn service_account_token(&self, namespace: &str, service_account: &str) -> String {
        let client = self.client().await;
        let request = http::Request::post(format!(
            "/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token"
        ))
        .header("content-type", "application/json")
        .body(
            serde_json::to_vec(&json!({
                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": 3600}
            }))
            .unwrap(),
        )
        .unwrap();
        let answer: serde_json::Value = client.request(request).await.unwrap();
        answer["status"]["token"].as_str().unwrap().to_owned()
    }

    /// A kubeconfig in `dir` for this cluster with a bearer `token`.
    pub fn kubeconfig_with_token(&self, dir: &Path, token: &str) -> PathBuf {
        let path = dir.join(format!("kubeconfig-{}", uuid::Uuid::now_v7().simple()));
        write_kubeconfig(
            &path,
            &self.server,
            &self.dir.join("pki/ca.crt"),
            "user",
            token,
        );
        path
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory effects; pid is a child this harness started.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(rc, 0, "cannot signal the controller manager");
}

/// A namespace owned by one test.
pub struct TestNamespace {
    pub name: String,
    plane: &'static ControlPlane,
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let name = self.name.clone();
        let kubeconfig = self.plane.admin_kubeconfig.clone();
        // Deleted on the harness's own runtime: the test's runtime may be shutting down.
        self.plane.runtime.spawn(async move {
            let api: Api<Namespace> = Api::all(client_from(&kubeconfig).await);
            let _ = api.delete(&name, &DeleteParams::default()).await;
        });
    }
}

async fn client_from(kubeconfig: &Path) -> kube::Client {
    salve::telemetry::install_crypto_provider();
    let kc = Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn write_kubeconfig(path: &Path, server: &str, ca: &Path, user: &str, token: &str) {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: real\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: {user}@real\n  context: {{cluster: real, user: {user}}}\ncurrent-context: {user}@real\n",
        ca.display()
    );
    std::fs::write(path, text).unwrap();
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("openssl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A CA, the apiserver's serving certificate (SAN 127.0.0.1), a service-account key pair.
fn certificates(pki: &Path) -> Result<(), String> {
    std::fs::create_dir_all(pki).map_err(|e| e.to_string())?;
    let quiet = |args: &[&str]| openssl(pki, args);
    quiet(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=salve-test-ca",
    ])?;
    quiet(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "apiserver.key",
        "-out",
        "apiserver.csr",
        "-subj",
        "/CN=kube-apiserver",
    ])?;
    std::fs::write(
        pki.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| e.to_string())?;
    quiet(&[
        "x509",
        "-req",
        "-in",
        "apiserver.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "apiserver.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ])?;
    quiet(&["genrsa", "-out", "sa.key", "2048"])?;
    quiet(&["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"])
}

fn token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Starts a child that dies with this thread (the harness thread never exits).
fn spawn(program: &Path, args: &[String], log: &Path) -> Result<u32, String> {
    let file = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone().map_err(|e| e.to_string())?)
        .stderr(file);
    super::die_with_parent(&mut cmd);
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    Ok(child.id())
}

fn wait_until(
    what: &str,
    within: Duration,
    log: &Path,
    mut ok: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let tail = std::fs::read_to_string(log).unwrap_or_default();
    let tail: String = tail.lines().rev().take(30).collect::<Vec<_>>().join("\n");
    Err(format!(
        "{what} not ready within {within:?}; last log lines (newest first):\n{tail}"
    ))
}

/// Starts everything on a dedicated thread that stays alive (and so keeps the children
/// alive) until the test binary exits.
fn start(assets: &Path, etcd: &Path) -> Result<ControlPlane, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let assets = assets.to_owned();
    let etcd = etcd.to_owned();
    std::thread::Builder::new()
        .name("control-plane".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            match start_here(&assets, &etcd, &runtime) {
                Ok((plane, node_kubeconfig)) => {
                    let held = plane.held.clone();
                    tx.send(Ok(plane)).unwrap();
                    runtime.block_on(kubelet(node_kubeconfig, held));
                }
                Err(e) => tx.send(Err(e)).unwrap(),
            }
        })
        .map_err(|e| e.to_string())?;
    rx.recv().map_err(|e| e.to_string())?
}

/// Removes the state directories of earlier test binaries that have exited (their
/// processes died with them; their etcd data would pile up in the temp directory).
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("salve-kube-")
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only asks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Starts the processes; `runtime` (its `block_on`, which drives timers and I/O) waits
/// for them.
fn start_here(
    assets: &Path,
    etcd: &Path,
    runtime: &tokio::runtime::Runtime,
) -> Result<(ControlPlane, PathBuf), String> {
    let begun = Instant::now();
    remove_stale_dirs();
    let dir = std::env::temp_dir().join(format!("salve-kube-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let pki = dir.join("pki");
    certificates(&pki)?;
    let (admin, kcm) = (token(), token());
    std::fs::write(
        pki.join("tokens.csv"),
        format!("{admin},admin,admin-uid,\"system:masters\"\n{kcm},system:kube-controller-manager,kcm-uid,\"system:masters\"\n"),
    )
    .map_err(|e| e.to_string())?;
    let (etcd_port, peer_port, api_port, kcm_port) = (
        super::real::free_port(),
        super::real::free_port(),
        super::real::free_port(),
        super::real::free_port(),
    );
    let server = format!("https://127.0.0.1:{api_port}");
    let ca = pki.join("ca.crt");
    let admin_kubeconfig = dir.join("admin.kubeconfig");
    write_kubeconfig(&admin_kubeconfig, &server, &ca, "admin", &admin);
    let kcm_kubeconfig = dir.join("kcm.kubeconfig");
    write_kubeconfig(&kcm_kubeconfig, &server, &ca, "kcm", &kcm);
    let p = |f: &str| pki.join(f).display().to_string();

    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let etcd_log = dir.join("etcd.log");
    spawn(
        etcd,
        &[
            "--name".into(),
            "salve-test".into(),
            "--data-dir".into(),
            dir.join("etcd").display().to_string(),
            "--listen-client-urls".into(),
            etcd_url.clone(),
            "--advertise-client-urls".into(),
            etcd_url.clone(),
            "--listen-peer-urls".into(),
            peer_url.clone(),
            "--initial-advertise-peer-urls".into(),
            peer_url.clone(),
            "--initial-cluster".into(),
            format!("salve-test={peer_url}"),
        ],
        &etcd_log,
    )?;
    wait_until("etcd", Duration::from_secs(30), &etcd_log, || {
        std::net::TcpStream::connect(("127.0.0.1", etcd_port)).is_ok()
    })?;

    let api_log = dir.join("kube-apiserver.log");
    spawn(
        &assets.join("kube-apiserver"),
        &[
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            "--endpoint-reconciler-type=none".into(),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            format!("--token-auth-file={}", p("tokens.csv")),
            "--authorization-mode=Node,RBAC".into(),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            "--allow-privileged".into(),
            "--profiling=false".into(),
            "--enable-priority-and-fairness=false".into(),
        ],
        &api_log,
    )?;
    let kc = admin_kubeconfig.clone();
    let apiserver_up = runtime.block_on(async move {
        let client = client_from(&kc).await;
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut seen = String::new();
        while Instant::now() < deadline {
            let readyz = http::Request::get("/readyz").body(Vec::new()).unwrap();
            match client.request_text(readyz).await {
                Ok(t) if t.trim() == "ok" => return Ok(()),
                Ok(t) => seen = t,
                Err(e) => seen = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(seen)
    });
    if let Err(seen) = apiserver_up {
        let tail = std::fs::read_to_string(&api_log).unwrap_or_default();
        let tail: String = tail.lines().rev().take(20).collect::<Vec<_>>().join("\n");
        return Err(format!(
            "kube-apiserver did not become ready ({seen}); its log, newest first:\n{tail}"
        ));
    }

    let kcm_log = dir.join("kube-controller-manager.log");
    let controller_manager = spawn(
        &assets.join("kube-controller-manager"),
        &[
            format!("--kubeconfig={}", kcm_kubeconfig.display()),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={kcm_port}"),
            "--leader-elect=false".into(),
            format!("--service-account-private-key-file={}", p("sa.key")),
            format!("--root-ca-file={}", p("ca.crt")),
            "--use-service-account-credentials=false".into(),
            "--controllers=*,-nodelifecycle,-nodeipam,-route,-service,-cloud-node-lifecycle,-persistentvolume-binder,-attachdetach,-persistentvolume-expander,-pvc-protection,-pv-protection,-ttl,-bootstrapsigner,-tokencleaner,-csrsigning,-csrapproving,-csrcleaner,-horizontalpodautoscaling,-disruption,-cronjob,-job,-ttl-after-finished,-endpointslicemirroring,-podgc".into(),
            "--concurrent-deployment-syncs=2".into(),
            "--concurrent-replicaset-syncs=2".into(),
            "--concurrent-statefulset-syncs=2".into(),
        ],
        &kcm_log,
    )?;
    let plane = ControlPlane {
        server,
        dir: dir.clone(),
        admin_kubeconfig: admin_kubeconfig.clone(),
        started_in: Duration::ZERO,
        controller_manager,
        held: Arc::new(Mutex::new(Vec::new())),
        runtime: runtime.handle().clone(),
    };
    // Ready when the controllers work: the namespace controller gave `default` its
    // ServiceAccount.
    let kc = admin_kubeconfig.clone();
    let controllers_up = runtime.block_on(async move {
        let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client_from(&kc).await, "default");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if sas.get_opt("default").await.ok().flatten().is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    });
    if !controllers_up {
        let tail = std::fs::read_to_string(&kcm_log).unwrap_or_default();
        return Err(format!("the controller manager did not come up:\n{tail}"));
    }
    let plane = ControlPlane {
        started_in: begun.elapsed(),
        ..plane
    };
    eprintln!(
        "real control plane at {} ready in {:.1}s (state in {})",
        plane.server,
        plane.started_in.as_secs_f64(),
        dir.display()
    );
    Ok((plane, admin_kubeconfig))
}

/// The readiness driver: one Node, every Pod bound to it and made Running and Ready
/// (held ones Running, never Ready), deleted Pods removed at once. Runs for the life of
/// the test binary.
async fn kubelet(kubeconfig: PathBuf, held: Arc<Mutex<Vec<String>>>) {
    let client = client_from(&kubeconfig).await;
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let merge = PatchParams::default();
    let node = json!({"metadata": {"name": "fake-node", "labels": {"kubernetes.io/hostname": "fake-node"}}});
    let _ = nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(node).unwrap(),
        )
        .await;
    let mut last_beat = Instant::now() - Duration::from_secs(60);
    loop {
        if last_beat.elapsed() > Duration::from_secs(20) {
            let now = chrono::Utc::now().to_rfc3339();
            let cap = json!({"cpu": "64", "memory": "256Gi", "pods": "500"});
            let status = json!({"status": {"capacity": cap, "allocatable": cap,
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                    "message": "salve test readiness driver", "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
            let _ = nodes
                .patch_status("fake-node", &merge, &Patch::Merge(&status))
                .await;
            last_beat = Instant::now();
        }
        if let Ok(list) = pods.list(&ListParams::default()).await {
            let held = held.lock().unwrap().clone();
            for pod in list.items {
                drive_pod(&client, &pod, &held).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

async fn drive_pod(client: &kube::Client, pod: &Pod, held: &[String]) {
    let (Some(ns), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
        return;
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    if pod.metadata.deletion_timestamp.is_some() {
        let _ = api
            .delete(name, &DeleteParams::default().grace_period(0))
            .await;
        return;
    }
    let spec = pod.spec.clone().unwrap_or_default();
    if spec.node_name.is_none() {
        let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                             "target": {"apiVersion": "v1", "kind": "Node", "name": "fake-node"}});
        let request = http::Request::post(format!("/api/v1/namespaces/{ns}/pods/{name}/binding"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&binding).unwrap())
            .unwrap();
        let _ = client.request_text(request).await;
        return;
    }
    let key = format!("{ns}/{name}");
    let ready_wanted = !held.iter().any(|p| key.starts_with(p.as_str()));
    let status = pod.status.clone().unwrap_or_default();
    let running = status.phase.as_deref() == Some("Running");
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    // A hold keeps Pods from *becoming* Ready; Pods already Ready stay so.
    if running && (ready == ready_wanted || ready) {
        return;
    }
    let now = chrono::Utc::now().to_rfc3339();
    let flag = if ready_wanted { "True" } else { "False" };
    let containers: Vec<_> = spec
        .containers
        .iter()
        .map(|c| json!({"name": c.name, "image": c.image, "imageID": "fake://image", "ready": ready_wanted,
                        "started": true, "restartCount": 0, "state": {"running": {"startedAt": now}}}))
        .collect();
    let patch = json!({"status": {
        "phase": "Running", "hostIP": "127.0.0.1", "podIP": "10.244.0.10", "startTime": now,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": flag, "lastTransitionTime": now},
            {"type": "Ready", "status": flag, "lastTransitionTime": now}],
        "containerStatuses": containers}});
    let _ = api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await;
}
