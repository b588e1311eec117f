#!/usr/bin/env bash
# test_manifests.sh BIN_DIR -- deploy/k8s/tfjob.yaml, deploy/k8s/data.yaml and deploy/compose.yaml
# against the daemons, without a cluster or containers (none here: kubectl has no API server,
# docker has no compose plugin). Seconds.
#
# - every YAML file parses (python3-yaml);
# - TFJob: kubeflow.org/v1, container `tensorflow` in every replica, port 2222 named tfjob-port,
#   cleanPodPolicy Running, restartPolicy OnFailure on Chief/Worker/PS, grpc probes on 2222 on
#   the PS, TFPS_JOB_SECRET from a secretKeyRef, PVC tfps-outputs (ReadWriteMany) at /outputs,
#   runAsNonRoot uid 1000, requests and limits; then, for every replica, the TF_CONFIG that the
#   operator injects (<job>-<type>-<i>.<ns>.svc:2222, every replica type in cluster, namespace
#   default) run through tfps-ps / tfps-worker --print-cluster with the replica's own args: exit
#   0, the printed task, is_chief, num_ps and num_workers right; the wrong daemon exits 2;
# - compose: every service's TF_CONFIG is accepted by its daemon with the service's command,
#   the same cluster in all of them, ps with --bind 0.0.0.0:2222, restart on-failure, the
#   shared outputs volume; worker-0 is the chief.
set -uo pipefail
bin=${1:?usage: test_manifests.sh BIN_DIR}
src=$(cd "$(dirname "$0")/.." && pwd)
python3 -c 'import yaml' 2>/dev/null ||
  { echo "test_manifests: python3-yaml missing (deploy/install-deps.sh installs it)" >&2; exit 1; }
for d in tfps-ps tfps-worker; do
  [ -x "$bin/$d" ] || { echo "test_manifests: $bin/$d not built" >&2; exit 1; }
done
exec timeout 120 python3 - "$bin" "$src" <<'PYEOF'
import json, os, subprocess, sys, tempfile
import yaml

bin_dir, src = sys.argv[1], sys.argv[2]
failed = 0
checks = 0
def check(cond, what):
    global failed, checks
    checks += 1
    if not cond:
        print("FAIL: " + what, file=sys.stderr)
        failed = 1
    return cond

def run(daemon, tf_config, args, env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TFPS_") and k != "TF_CONFIG"}
    env.update(env_extra)
    env["TF_CONFIG"] = json.dumps(tf_config) if not isinstance(tf_config, str) else tf_config
    p = subprocess.run([os.path.join(bin_dir, daemon), "--print-cluster"] + list(args), env=env,
                       capture_output=True, text=True, timeout=30)
    return p

def load_all(rel):
    with open(os.path.join(src, rel)) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]

tmp = tempfile.mkdtemp(prefix="tfps-manifests-")
secret_file = os.path.join(tmp, "job-secret")
with open(secret_file, "w") as f:
    f.write("0123456789abcdef0123456789abcdef")

# ---------------------------------------------------------------- TFJob
docs = load_all("deploy/k8s/tfjob.yaml")
data_docs = load_all("deploy/k8s/data.yaml")
check([d["kind"] for d in data_docs] == ["PersistentVolumeClaim", "Pod"], "data.yaml: a PVC and a loader pod")
check(data_docs[0]["metadata"]["name"] == "tfps-data", "data.yaml: PVC named tfps-data")
jobs = [d for d in docs if d.get("kind") == "TFJob"]
pvcs = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "PersistentVolumeClaim"}
check(len(jobs) == 1, "tfjob.yaml: exactly one TFJob (found %d)" % len(jobs))
job = jobs[0]
check(job["apiVersion"] == "kubeflow.org/v1", "apiVersion kubeflow.org/v1, not %r" % job["apiVersion"])
name = job["metadata"]["name"]
ns = job["metadata"].get("namespace", "default")
check(job["spec"]["runPolicy"]["cleanPodPolicy"] == "Running", "runPolicy.cleanPodPolicy Running")
check("tfps-outputs" in pvcs and pvcs["tfps-outputs"]["spec"]["accessModes"] == ["ReadWriteMany"],
      "PVC tfps-outputs ReadWriteMany")
specs = job["spec"]["tfReplicaSpecs"]
want_counts = {"Chief": 1, "Worker": 2, "PS": 2, "Evaluator": 1}
check(sorted(specs) == sorted(want_counts), "replica types %s" % sorted(specs))
for rt, n in want_counts.items():
    check(specs.get(rt, {}).get("replicas") == n, "%s replicas %d" % (rt, n))
for rt in ("Chief", "Worker", "PS"):
    check(specs[rt].get("restartPolicy") == "OnFailure", "%s restartPolicy OnFailure" % rt)

# The operator's TF_CONFIG: every replica type of the spec, lowercase, <job>-<type>-<i>.<ns>.svc:<port>
def port_of(c):
    ports = [p for p in c.get("ports", []) if p.get("name") == "tfjob-port"]
    return ports[0]["containerPort"] if ports else 2222
cluster = {}
for rt, s in specs.items():
    c = s["template"]["spec"]["containers"][0]
    t = rt.lower()
    cluster[t] = ["%s-%s-%d.%s.svc:%d" % (name, t, i, ns, port_of(c)) for i in range(s["replicas"])]
n_training = len(cluster.get("chief", [])) + len(cluster.get("master", [])) + len(cluster.get("worker", []))

for rt, s in specs.items():
    pod = s["template"]["spec"]
    cs = pod["containers"]
    tf = [c for c in cs if c["name"] == "tensorflow"]
    if not check(len(tf) == 1, "%s: one container named tensorflow (names %s)" % (rt, [c["name"] for c in cs])):
        continue
    c = tf[0]
    check(c["image"] == "tfps:latest", "%s: image tfps:latest" % rt)
    check({"name": "tfjob-port", "containerPort": 2222} in [{k: p[k] for k in ("name", "containerPort")} for p in c.get("ports", [])],
          "%s: port 2222 named tfjob-port" % rt)
    sec = pod.get("securityContext", {})
    check(sec.get("runAsNonRoot") is True and sec.get("runAsUser") == 1000, "%s: runAsNonRoot, uid 1000" % rt)
    r = c.get("resources", {})
    check(all(k in r.get(w, {}) for w in ("requests", "limits") for k in ("cpu", "memory")),
          "%s: cpu and memory requests and limits" % rt)
    env = {e["name"]: e for e in c.get("env", [])}
    check(env.get("TFPS_JOB_SECRET", {}).get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "tfps-job-secret",
          "%s: TFPS_JOB_SECRET from secretKeyRef tfps-job-secret" % rt)
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    check(vols.get(mounts.get("/outputs"), {}).get("persistentVolumeClaim", {}).get("claimName") == "tfps-outputs",
          "%s: /outputs is the PVC tfps-outputs" % rt)
    check(vols.get(mounts.get("/data"), {}).get("persistentVolumeClaim", {}).get("claimName") == "tfps-data",
          "%s: /data is the PVC tfps-data" % rt)
    args = [str(a) for a in c.get("args", [])]
    for opt, val in (("--output-dir", "/outputs"), ("--data-folder", "/data")):
        check(opt in args and args[args.index(opt) + 1] == val, "%s: %s %s in args" % (rt, opt, val))
    check("--epochs" in args, "%s: --epochs in args" % rt)
    if rt == "PS":
        check("--bind" in args and args[args.index("--bind") + 1] == "0.0.0.0:2222", "PS: --bind 0.0.0.0:2222")
        for probe in ("readinessProbe", "livenessProbe"):
            check(c.get(probe, {}).get("grpc", {}).get("port") == 2222, "PS: %s grpc on port 2222" % probe)
    daemon = "tfps-ps" if rt == "PS" else "tfps-worker"
    wrong = "tfps-worker" if rt == "PS" else "tfps-ps"
    for i in range(s["replicas"]):
        tfc = {"cluster": cluster, "task": {"type": rt.lower(), "index": i}, "environment": "cloud"}
        for extra in ([], args):
            p = run(daemon, tfc, extra, {"TFPS_JOB_SECRET": "k8s-secret-value-0123456789"})
            what = "%s %s-%d %s" % (daemon, rt.lower(), i, "with the manifest's args" if extra else "bare")
            if not check(p.returncode == 0, "%s: exit %d: %s" % (what, p.returncode, p.stderr.strip()[-400:])):
                continue
            try:
                out = json.loads(p.stdout)
            except ValueError as e:
                check(False, "%s: output not JSON (%s): %r" % (what, e, p.stdout[:200]))
                continue
            check(out["task"]["type"] == rt.lower() and int(out["task"]["index"]) == i,
                  "%s: task %r" % (what, out["task"]))
            check(out["num_ps"] == 2, "%s: num_ps %r, want 2" % (what, out["num_ps"]))
            check(out["num_workers"] == n_training == 3, "%s: num_workers %r, want 3" % (what, out["num_workers"]))
            check(out["is_chief"] == (rt == "Chief"), "%s: is_chief %r" % (what, out["is_chief"]))
            check(len(out["shard_plan"]) == 2, "%s: shard plan over 2 ps" % what)
            # the training cluster: every job but the evaluator (outside it, README: TF_CONFIG)
            training = {k: v for k, v in cluster.items() if k != "evaluator"}
            check(out["cluster"] == training and [len(out["cluster"][k]) for k in ("chief", "worker", "ps")] == [1, 2, 2],
                  "%s: printed cluster %r, want %r" % (what, out["cluster"], training))
        p = run(wrong, {"cluster": cluster, "task": {"type": rt.lower(), "index": i}}, args, {})
        check(p.returncode == 2, "%s refuses a %s task: exit %d" % (wrong, rt, p.returncode))

# ---------------------------------------------------------------- compose
comp = load_all("deploy/compose.yaml")[0]
svcs = comp["services"]
check(sorted(s for s in svcs if "TF_CONFIG" in svcs[s].get("environment", {})) ==
      ["evaluator", "ps-0", "ps-1", "worker-0", "worker-1"], "compose: services with TF_CONFIG %s" % sorted(svcs))
check("tfps-outputs" in comp.get("volumes", {}), "compose: named volume tfps-outputs")
check("job_secret" in comp.get("secrets", {}), "compose: secret job_secret")
clusters = []
digests = set()
for sname, s in sorted(svcs.items()):
    env = s.get("environment", {})
    if "TF_CONFIG" not in env:
        continue
    tfc = json.loads(env["TF_CONFIG"])
    clusters.append(tfc["cluster"])
    t = tfc["task"]["type"]
    check(sname == ("%s-%d" % (t, tfc["task"]["index"]) if t != "evaluator" else "evaluator"),
          "compose %s: task %r matches the service name" % (sname, tfc["task"]))
    check(str(s.get("restart", "")).startswith("on-failure"), "compose %s: restart on-failure" % sname)
    check("tfps-outputs:/outputs" in s.get("volumes", []), "compose %s: tfps-outputs at /outputs" % sname)
    check(any(v.endswith(":/data:ro") or v.endswith(":/data") for v in s.get("volumes", [])), "compose %s: /data mounted" % sname)
    check(env.get("TFPS_JOB_SECRET_FILE") == "/run/secrets/job_secret" and "job_secret" in s.get("secrets", []),
          "compose %s: job secret from the compose secret" % sname)
    args = [str(a) for a in s.get("command", [])]
    daemon = "tfps-ps" if t == "ps" else "tfps-worker"
    if t == "ps":
        check("--bind" in args and args[args.index("--bind") + 1] == "0.0.0.0:2222", "compose %s: --bind 0.0.0.0:2222" % sname)
    # every address is a service name on port 2222
    for job_name, addrs in tfc["cluster"].items():
        for i, a in enumerate(addrs):
            check(a == ("%s-%d:2222" % (job_name, i) if job_name != "evaluator" else "evaluator:2222"),
                  "compose %s: cluster.%s[%d] %s is the service name on port 2222" % (sname, job_name, i, a))
    p = run(daemon, env["TF_CONFIG"], args, {"TFPS_JOB_SECRET_FILE": secret_file})
    if not check(p.returncode == 0, "compose %s: %s exit %d: %s" % (sname, daemon, p.returncode, p.stderr.strip()[-400:])):
        continue
    out = json.loads(p.stdout)
    check(out["task"]["type"] == t and int(out["task"]["index"]) == tfc["task"]["index"], "compose %s: task %r" % (sname, out["task"]))
    check(out["num_ps"] == 2 and out["num_workers"] == 2, "compose %s: 2 ps, 2 workers (%r, %r)" % (sname, out["num_ps"], out["num_workers"]))
    check(out["is_chief"] == (sname == "worker-0"), "compose %s: is_chief %r" % (sname, out["is_chief"]))
    digests.add(out["shard_plan_digest"])
check(len(clusters) == 5 and all(c == clusters[0] for c in clusters), "compose: one cluster in every TF_CONFIG")
check(len(digests) == 1, "compose: one shard plan everywhere (%d digests)" % len(digests))

import shutil
shutil.rmtree(tmp, ignore_errors=True)
print("test_manifests: %d checks, %s" % (checks, "FAILED" if failed else "all passed"))
sys.exit(failed)
PYEOF
