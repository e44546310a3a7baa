//! salve as shipped for a cluster (`deploy/`): the Kustomize overlays build with
//! `kubectl kustomize`, a real API server accepts them (`kubectl apply --dry-run=server`),
//! and the `single` overlay's Pod runs: its container's arguments and environment, its
//! ConfigMap and Secret laid out as the kubelet lays them out, its probes answered.
//! Needs kubectl (and, for the dry-run, the real control plane); skips loudly without
//! them on a laptop, fails under CI.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::control_plane::ControlPlane;
use support::kubelet::lay_out_volume;
use support::{component_missing, die_with_parent, eventually, fresh_database, installed};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `kubectl kustomize deploy/overlays/OVERLAY`: the YAML and its documents.
fn kustomize(overlay: &str) -> Option<(String, Vec<Value>)> {
    if !installed("kubectl", &["version", "--client"]) {
        component_missing(
            "kubectl (Debian package kubernetes-client)",
            "this deploy test",
        );
        return None;
    }
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(root().join("deploy/overlays").join(overlay))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize deploy/overlays/{overlay}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let docs = serde_norway::Deserializer::from_str(&text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .collect();
    Some((text, docs))
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {docs:#?}"))
}

/// Every file of `policies/` that salve reads (not the packaging files).
fn policy_files() -> Vec<String> {
    let mut files = Vec::new();
    let mut dirs = vec![root().join("policies")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let name = path.file_name().unwrap().to_str().unwrap();
            if name != "Kustomization" && !name.ends_with(".md") {
                let rel = path.strip_prefix(root().join("policies")).unwrap();
                files.push(rel.to_str().unwrap().to_owned());
            }
        }
    }
    files.sort();
    files
}

#[test]
fn both_overlays_build_and_hold_what_a_cluster_needs() {
    let Some((_, single)) = kustomize("single") else {
        return;
    };
    let Some((_, ha)) = kustomize("ha") else {
        return;
    };
    for (name, docs, replicas) in [("single", &single, 1), ("ha", &ha, 2)] {
        let d = of_kind(docs, "Deployment");
        assert_eq!(d["metadata"]["namespace"], "salve", "{name}");
        assert_eq!(d["spec"]["replicas"], replicas, "{name}");
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], "salve");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        let c = &pod["containers"][0];
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert!(c["resources"]["limits"]["memory"].is_string(), "{name}");
        for kind in [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "Service",
            "PodDisruptionBudget",
        ] {
            of_kind(docs, kind);
        }
        // The ConfigMap holds every policy file, and the volume maps each back to its
        // path: a file added to policies/ but not to policies/Kustomization and the
        // Deployment's items would be missing in the cluster.
        let cm = of_kind(docs, "ConfigMap");
        assert_eq!(cm["metadata"]["name"], "salve-policies");
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "policies")
            .unwrap();
        assert_eq!(volume["configMap"]["name"], "salve-policies");
        let mut mapped: Vec<String> = volume["configMap"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let key = i["key"].as_str().unwrap();
                assert!(cm["data"][key].is_string(), "{key} is not in the ConfigMap");
                i["path"].as_str().unwrap().to_owned()
            })
            .collect();
        mapped.sort();
        assert_eq!(mapped, policy_files(), "{name}: the mounted policy files");
    }
    let single_args =
        of_kind(&single, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
            .to_string();
    assert!(single_args.contains("--database=sqlite:///var/lib/salve/salve.db"));
    assert_eq!(
        of_kind(&single, "Deployment")["spec"]["strategy"]["type"],
        "Recreate"
    );
    of_kind(&single, "PersistentVolumeClaim");
    let ha_env =
        of_kind(&ha, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(ha_env.contains("SALVE_DATABASE_URL") && ha_env.contains("salve-database"));
    assert_eq!(
        of_kind(&ha, "PodDisruptionBudget")["spec"]["minAvailable"],
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_overlays_pass_a_server_side_dry_run_on_a_real_control_plane() {
    let Some(cp) = ControlPlane::get() else {
        return;
    };
    // A dry-run creates nothing, so the namespace the overlays put everything in must
    // exist for the namespaced objects to be judged (as it would after a first apply).
    let client = cp.client().await;
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
    let salve_ns = serde_json::from_value(json!({"metadata": {"name": "salve"}})).unwrap();
    let _ = namespaces
        .create(&kube::api::PostParams::default(), &salve_ns)
        .await;
    for overlay in ["single", "ha"] {
        let Some((text, docs)) = kustomize(overlay) else {
            return;
        };
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&cp.admin_kubeconfig)
            .args(["apply", "--dry-run=server", "-f"])
            .arg(file.path())
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{overlay}: {said}");
        for d in &docs {
            let kind = d["kind"].as_str().unwrap().to_lowercase();
            let name = d["metadata"]["name"].as_str().unwrap();
            // kubectl names each object `kind[.group]/name ... (server dry run)`.
            let judged = said.lines().any(|l| {
                let Some((resource, rest)) = l.split_once('/') else {
                    return false;
                };
                resource.split('.').next() == Some(kind.as_str())
                    && rest.starts_with(&format!("{name} "))
                    && l.ends_with("(server dry run)")
            });
            assert!(
                judged,
                "{overlay}: {kind}/{name} not judged by the server: {said}"
            );
        }
    }
}

/// The host directory standing in for a volume of the Pod.
struct Mounts(Vec<(String, PathBuf)>);

impl Mounts {
    /// `text` with the (longest) mount path it names replaced by its host directory.
    fn rewrite(&self, text: &str) -> String {
        match self
            .0
            .iter()
            .filter(|(mount, _)| text.contains(&format!("{mount}/")) || text.ends_with(mount))
            .max_by_key(|(mount, _)| mount.len())
        {
            Some((mount, host)) => text.replacen(mount.as_str(), host.to_str().unwrap(), 1),
            None => text.to_owned(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_single_overlays_pod_starts_with_its_configmap_as_the_kubelet_mounts_it() {
    let Some((_, docs)) = kustomize("single") else {
        return;
    };
    let pod = &of_kind(&docs, "Deployment")["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let configmap = of_kind(&docs, "ConfigMap");
    let secret = json!({"webhook-token": "hook-token-1", "read-token": "read-token-1"});
    let host = tempfile::tempdir().unwrap();

    // Each volume as the kubelet provides it.
    let mut mounts = Vec::new();
    for m in container["volumeMounts"].as_array().unwrap() {
        let name = m["name"].as_str().unwrap();
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap();
        let dir = host.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let (source, items) = if volume["configMap"].is_object() {
            (&configmap["data"], &volume["configMap"]["items"])
        } else if volume["secret"].is_object() {
            (&secret, &volume["secret"]["items"])
        } else {
            assert!(
                volume["emptyDir"].is_object() || volume["persistentVolumeClaim"].is_object(),
                "{volume}"
            );
            mounts.push((m["mountPath"].as_str().unwrap().to_owned(), dir));
            continue;
        };
        let files: Vec<(String, Vec<u8>)> = items
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let key = i["key"].as_str().unwrap();
                let content = source[key].as_str().unwrap_or_else(|| panic!("no {key}"));
                (i["path"].as_str().unwrap().to_owned(), content.into())
            })
            .collect();
        lay_out_volume(&dir, &files);
        mounts.push((m["mountPath"].as_str().unwrap().to_owned(), dir));
    }
    let mounts = Mounts(mounts);

    // The container's command line and environment, on this host.
    let port = support::real::free_port();
    let mut args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| mounts.rewrite(a.as_str().unwrap()))
        .map(|a| a.replace("0.0.0.0:9095", &format!("127.0.0.1:{port}")))
        .collect();
    // Under SALVE_TEST_DATABASE=postgres, the suite's database instead of the file.
    let database = fresh_database(host.path()).await;
    if database.starts_with("postgres") {
        args.retain(|a| !a.starts_with("--database="));
        args.push(format!("--database={database}"));
    }
    let log = host.path().join("salve.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_salve"));
    cmd.args(&args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        // No Kubernetes configuration here: salve runs offline, as README says.
        .env("HOME", host.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(host.path().join("stderr.log")).unwrap());
    for e in container["env"].as_array().unwrap() {
        let from = &e["valueFrom"]["secretKeyRef"];
        let value = match from["key"].as_str() {
            Some(key) => secret[key].as_str().map(str::to_owned),
            None => e["value"].as_str().map(str::to_owned),
        };
        if let Some(v) = value {
            cmd.env(e["name"].as_str().unwrap(), v);
        }
    }
    die_with_parent(&mut cmd);
    let mut child = cmd.spawn().unwrap();

    let base = format!("http://127.0.0.1:{port}");
    salve::telemetry::install_crypto_provider();
    let http = reqwest::Client::new();
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let path = container[probe]["httpGet"]["path"].as_str().unwrap();
        let url = format!("{base}{path}");
        eventually(
            &format!("the {probe} ({path})"),
            Duration::from_secs(30),
            async || {
                if let Ok(Some(status)) = child.try_wait() {
                    let stderr = std::fs::read_to_string(host.path().join("stderr.log"));
                    return Err(format!("salve exited {status}: {stderr:?}"));
                }
                match http.get(&url).send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("{}", r.status())),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await;
    }
    // The token from the Secret volume guards the webhook; the read token from the env.
    let payload = support::firing_for("HighRequestLatency", "shop", "checkout", "00000000000d0001");
    let refused = http
        .post(format!("{base}/api/v1/alerts"))
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let taken = http
        .post(format!("{base}/api/v1/alerts"))
        .bearer_auth("hook-token-1")
        .body(payload)
        .send()
        .await
        .unwrap();
    assert_eq!(taken.status(), 200);
    let listed = http
        .get(format!("{base}/api/v1/alerts"))
        .bearer_auth("read-token-1")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let _ = child.kill();
    let _ = child.wait();

    // The shipped guardrails' data came through the `..data` links (without them, three
    // policy tests fail and salve refuses to start), and the log is JSON as configured.
    let stderr = std::fs::read_to_string(host.path().join("stderr.log")).unwrap();
    let loaded = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("loaded rules and policy"))
        })
        .unwrap_or_else(|| panic!("no JSON start-up line in {stderr}"));
    assert!(loaded["fields"]["rules"].as_u64().unwrap() > 0, "{loaded}");
    let policies = mounts.rewrite("/etc/salve/policies");
    let tested = Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(["policy", "test", &policies])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&tested.stdout);
    assert!(tested.status.success(), "{said}");
    assert!(said.contains("PASS: 15/15"), "{said}");
    assert!(Path::new(&policies).join("..data").is_symlink());
}
