#!/usr/bin/env python3
"""Policy checks on rendered Kubernetes manifests (used by check-deploy.sh).

Checks, failing with every problem listed:

- Pod Security "restricted" (https://kubernetes.io/docs/concepts/security/pod-security-standards/)
  on every workload's pod template: runAsNonRoot, no privilege escalation,
  capabilities drop ALL (add at most NET_BIND_SERVICE), seccomp
  RuntimeDefault or Localhost, no privileged / host namespaces / hostPath /
  hostPort, only the volume types the profile allows, not UID 0; plus our
  own rule: a read-only root filesystem.
- No Secret carries data (secrets are created by operators, referenced only).
- No ConfigMap carries an API token.
- The `namespaced` overlay renders no cluster-scoped object.
- ServiceMonitor / PrometheusRule (no built-in schema) have the expected
  shape; the PrometheusRule's groups are written to --rules-out for
  `promtool check rules`.
"""

import argparse
import sys

import yaml

WORKLOADS = {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"}
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
    "PersistentVolume", "StorageClass", "PriorityClass", "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration", "APIService", "IngressClass", "RuntimeClass",
}
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
    "persistentVolumeClaim", "projected", "secret",
}


def pod_spec(obj):
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        return (((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
    return (spec.get("template") or {}).get("spec") or {}


def check_pod(where, pod, problems):
    def bad(msg):
        problems.append(f"{where}: {msg}")

    psc = pod.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            bad(f"{key} must not be set")
    for vol in pod.get("volumes") or []:
        types = [k for k in vol if k != "name"]
        for t in types:
            if t not in RESTRICTED_VOLUMES:
                bad(f"volume {vol.get('name')}: type {t} is not allowed by the restricted profile")
    containers = [("container", c) for c in pod.get("containers") or []]
    containers += [("initContainer", c) for c in pod.get("initContainers") or []]
    if not containers:
        bad("no containers")
    for role, c in containers:
        at = f"{role} {c.get('name')}"
        sc = c.get("securityContext") or {}
        run_as_non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if run_as_non_root is not True:
            bad(f"{at}: runAsNonRoot must be true (pod or container)")
        uid = sc.get("runAsUser", psc.get("runAsUser"))
        if uid == 0:
            bad(f"{at}: runAsUser must not be 0")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad(f"{at}: allowPrivilegeEscalation must be false")
        if sc.get("privileged"):
            bad(f"{at}: privileged must not be set")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            bad(f"{at}: capabilities.drop must include ALL")
        extra = set(caps.get("add") or []) - {"NET_BIND_SERVICE"}
        if extra:
            bad(f"{at}: capabilities.add may only hold NET_BIND_SERVICE, has {sorted(extra)}")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad(f"{at}: seccompProfile.type must be RuntimeDefault or Localhost, is {seccomp}")
        if sc.get("readOnlyRootFilesystem") is not True:
            bad(f"{at}: readOnlyRootFilesystem must be true")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                bad(f"{at}: hostPort must not be set")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rendered")
    parser.add_argument("--target", required=True, help="kustomization name (base, dev, namespaced, ...)")
    parser.add_argument("--rules-out", required=True, help="where to write PrometheusRule groups")
    args = parser.parse_args()

    with open(args.rendered, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    problems = []
    groups = []
    workloads = 0
    for obj in docs:
        kind = obj.get("kind")
        name = (obj.get("metadata") or {}).get("name")
        where = f"{args.target}: {kind}/{name}"
        if kind in WORKLOADS:
            workloads += 1
            check_pod(where, pod_spec(obj), problems)
        if kind == "Secret" and (obj.get("data") or obj.get("stringData")):
            problems.append(f"{where}: ships secret data; reference Secrets, never include them")
        if kind == "ConfigMap":
            for key, text in (obj.get("data") or {}).items():
                for line in str(text).splitlines():
                    if line.strip().startswith("api_token:"):
                        problems.append(f"{where}: {key} sets api_token; use AIOPSD_SERVER__API_TOKEN from a Secret")
        if args.target == "namespaced" and kind in CLUSTER_SCOPED:
            problems.append(f"{where}: cluster-scoped objects are not allowed in the namespaced overlay")
        if kind == "ServiceMonitor":
            spec = obj.get("spec") or {}
            if obj.get("apiVersion") != "monitoring.coreos.com/v1":
                problems.append(f"{where}: apiVersion must be monitoring.coreos.com/v1")
            if not (spec.get("selector") or {}).get("matchLabels"):
                problems.append(f"{where}: spec.selector.matchLabels is required")
            for ep in spec.get("endpoints") or []:
                unknown = set(ep) - {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels"}
                if unknown or "port" not in ep:
                    problems.append(f"{where}: endpoint needs `port`; unexpected keys {sorted(unknown)}")
            if not spec.get("endpoints"):
                problems.append(f"{where}: spec.endpoints is required")
        if kind == "PrometheusRule":
            if obj.get("apiVersion") != "monitoring.coreos.com/v1":
                problems.append(f"{where}: apiVersion must be monitoring.coreos.com/v1")
            spec = obj.get("spec") or {}
            if set(spec) != {"groups"}:
                problems.append(f"{where}: spec must hold exactly `groups`")
            groups.extend(spec.get("groups") or [])
    if workloads == 0:
        problems.append(f"{args.target}: no workload rendered")

    with open(args.rules_out, "w", encoding="utf-8") as f:
        if groups:
            yaml.safe_dump({"groups": groups}, f, sort_keys=False)

    if problems:
        for p in problems:
            print(f"policy: {p}", file=sys.stderr)
        sys.exit(1)
    print(f"policy: {args.target}: {len(docs)} objects, {workloads} workload(s), {len(groups)} rule group(s): ok")


if __name__ == "__main__":
    main()
