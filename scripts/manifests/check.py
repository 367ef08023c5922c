"""Checks over the built output of every kustomization under manifests/.

Usage: check.py REPO BUILT_DIR TENANT_AUTHZ_BINARY
BUILT_DIR holds one <kustomization path with / as __>.yaml per kustomization (see
scripts/test-manifests). Prints one line per check; exits 1 on the first group that fails,
after printing every problem of that group.
"""

import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

import yaml
import kubernetes_validate
from kubernetes_validate.utils import SchemaNotFoundError

K8S_VERSION = "1.32.0"

# Kinds defined by CRDs: what we rely on, checked field by field (no schema offline).
CRD_KINDS = {
    "TempoStack", "ServiceMonitor", "PrometheusRule", "GrafanaDatasource", "GrafanaDashboard",
    "OpenTelemetryCollector", "AuthorizationPolicy", "PeerAuthentication", "Certificate",
}
CRD_API = {
    "TempoStack": "tempo.grafana.com/v1alpha1",
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
    "GrafanaDatasource": "grafana.integreatly.org/v1beta1",
    "GrafanaDashboard": "grafana.integreatly.org/v1beta1",
    "OpenTelemetryCollector": "opentelemetry.io/v1beta1",
    "AuthorizationPolicy": "security.istio.io/v1",
    "PeerAuthentication": "security.istio.io/v1",
    "Certificate": "cert-manager.io/v1",
}
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}
# The metric names of README.md "Metrics" (the alerts and the dashboard may use no other;
# tests/metrics_contract.rs checks the same queries against a real scrape).
def readme_metrics():
    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Metrics (`GET /metrics`", 1)[1]
    return set(re.findall(r"^\| `(tenant_authz_[a-z_]+)`", section, re.M))


METRICS = readme_metrics()
PLACEHOLDER = re.compile(r"CHANGE-ME")

problems = []


def fail(where, msg):
    problems.append(f"{where}: {msg}")


def group(title):
    """Ends the previous group (exit on problems) and announces the next."""
    if problems:
        for p in problems:
            print(f"    FAIL {p}")
        print(f"FAILED: {len(problems)} problem(s)")
        sys.exit(1)
    if title:
        print(f"--> {title}")


def get(obj, path, default=None):
    for key in path.split("."):
        if isinstance(obj, dict) and key in obj:
            obj = obj[key]
        elif isinstance(obj, list) and key.isdigit() and int(key) < len(obj):
            obj = obj[int(key)]
        else:
            return default
    return obj


def name_of(doc):
    ns = get(doc, "metadata.namespace")
    n = get(doc, "metadata.name")
    return f"{doc.get('kind')}/{ns + '/' if ns else ''}{n}"


def load(built_dir):
    builds = {}
    for f in sorted(os.listdir(built_dir)):
        if f.endswith(".yaml"):
            with open(os.path.join(built_dir, f), "rb") as fh:
                docs = [d for d in yaml.safe_load_all(fh) if d]
            builds[f[:-5].replace("__", "/")] = docs
    return builds


# ------------------------------------------------------------------ schemas
def check_schemas(builds):
    group(f"built-in kinds validate against the Kubernetes {K8S_VERSION} schemas (strict)")
    seen = set()
    count = 0
    for build, docs in builds.items():
        for d in docs:
            key = (name_of(d), json.dumps(d, sort_keys=True))
            if key in seen:
                continue
            seen.add(key)
            if d.get("kind") in CRD_KINDS:
                if d.get("apiVersion") != CRD_API[d["kind"]]:
                    fail(f"{build} {name_of(d)}", f"apiVersion {d.get('apiVersion')}, want {CRD_API[d['kind']]}")
                continue
            try:
                kubernetes_validate.validate(d, K8S_VERSION, strict=True)
                count += 1
            except SchemaNotFoundError:
                fail(f"{build} {name_of(d)}", "no schema: a CRD kind the checker does not know")
            except kubernetes_validate.ValidationError as e:
                fail(f"{build} {name_of(d)}", f"{'.'.join(str(p) for p in e.path)}: {e.message}")
    print(f"    {count} distinct objects valid")


# ------------------------------------------------------------------ CRD kinds
def check_crds(builds):
    group("CRD kinds carry the fields we rely on")
    for build, docs in builds.items():
        for d in docs:
            k, w = d.get("kind"), f"{build} {name_of(d)}"
            s = d.get("spec", {})
            if k == "TempoStack":
                if get(s, "template.gateway.enabled") is not False:
                    fail(w, "the operator's gateway must be off (spec.template.gateway.enabled: false)")
                if get(s, "tenants.mode") != "static":
                    fail(w, "multitenancy must be on (spec.tenants.mode: static)")
                if get(s, "extraConfig.tempo.query_frontend.multi_tenant_queries_enabled") is not True:
                    fail(w, "extraConfig.tempo.query_frontend.multi_tenant_queries_enabled must be true")
                if get(s, "networkPolicy.enabled") is not False:
                    fail(w, "the operator's NetworkPolicies would open distributor and query frontend")
                if get(s, "storage.secret.type") != "s3" or not get(s, "storage.secret.name"):
                    fail(w, "storage.secret {name, type: s3} required")
                if get(d, "metadata.name") != "tempo":
                    fail(w, "named tempo: envoy/*.yaml point at tempo-tempo-<component>")
            elif k == "ServiceMonitor":
                for e in s.get("endpoints", []):
                    if not e.get("port") or not e.get("path"):
                        fail(w, "endpoints need a named port and a path")
            elif k == "PrometheusRule":
                alerts = [r for g in s.get("groups", []) for r in g.get("rules", [])]
                names = {r.get("alert") for r in alerts}
                for want in ("TenantAuthzDown", "TenantAuthzUnavailable",
                             "TenantAuthzBackendLatencyHigh", "TenantAuthzDenySpike",
                             "TenantAuthzWatchDown"):
                    if want not in names:
                        fail(w, f"alert {want} missing")
                for r in alerts:
                    for m in re.findall(r"tenant_authz_[a-z_]+", r.get("expr", "")):
                        base = re.sub(r"_(bucket|sum|count)$", "", m)
                        if base not in METRICS:
                            fail(w, f"{r.get('alert')}: unknown metric {m}")
            elif k == "GrafanaDashboard":
                try:
                    dash = json.loads(s.get("json", ""))
                except ValueError as e:
                    fail(w, f"spec.json is not JSON: {e}")
                    continue
                if not s.get("instanceSelector"):
                    fail(w, "instanceSelector required")
                for p in dash.get("panels", []):
                    for t in p.get("targets", []):
                        for m in re.findall(r"tenant_authz_[a-z_]+", t.get("expr", "")):
                            if re.sub(r"_(bucket|sum|count)$", "", m) not in METRICS:
                                fail(w, f"panel {p.get('title')}: unknown metric {m}")
            elif k == "GrafanaDatasource":
                ns = get(d, "metadata.namespace")
                ds = s.get("datasource", {})
                jd, sj = ds.get("jsonData", {}), ds.get("secureJsonData", {})
                if ds.get("type") != "tempo":
                    fail(w, "datasource.type must be tempo")
                if jd.get("httpHeaderName1") != "Authorization" or sj.get("httpHeaderValue1") != "Bearer ${token}":
                    fail(w, "Authorization: Bearer ${token} required")
                if jd.get("httpHeaderName2") != "X-Scope-OrgID" or sj.get("httpHeaderValue2") != ns:
                    fail(w, f"X-Scope-OrgID must be the namespace {ns!r}, is {sj.get('httpHeaderValue2')!r}")
                refs = [v for v in s.get("valuesFrom", []) if v.get("targetPath") == "secureJsonData.httpHeaderValue1"]
                if not refs or get(refs[0], "valueFrom.secretKeyRef.name") != "grafana-ds-sa-token":
                    fail(w, "httpHeaderValue1 must come from the grafana-ds-sa-token Secret")
                if jd.get("tlsSkipVerify"):
                    fail(w, "tlsSkipVerify would send the token to an unverified server")
            elif k == "OpenTelemetryCollector":
                ns = get(d, "metadata.namespace")
                cfg = s.get("config", {})
                exps = cfg.get("exporters", {})
                # otlp_grpc/tempo (frontends, TLS) or otlp_http/tempo (istio overlay, sidecar mTLS).
                tempo_ids = [e for e in exps if e in ("otlp_grpc/tempo", "otlp_http/tempo")]
                tempo = exps.get(tempo_ids[0], {}) if len(tempo_ids) == 1 else {}
                if len(tempo_ids) != 1:
                    fail(w, f"exactly one exporter otlp_grpc/tempo or otlp_http/tempo, got {sorted(exps)}")
                if tempo.get("auth", {}).get("authenticator") != "bearertokenauth":
                    fail(w, "exporter to Tempo must authenticate with bearertokenauth")
                if tempo.get("headers", {}).get("X-Scope-OrgID") != ns:
                    fail(w, f"X-Scope-OrgID must be the namespace {ns!r}")
                if "bearertokenauth" not in get(cfg, "service.extensions", []):
                    fail(w, "bearertokenauth must be enabled in service.extensions")
                token_file = get(cfg, "extensions.bearertokenauth.filename", "")
                projected = [v for v in s.get("volumes", []) for src in get(v, "projected.sources", [])
                             if "serviceAccountToken" in src and src["serviceAccountToken"].get("audience")]
                mounts = {m["name"]: m["mountPath"] for m in s.get("volumeMounts", [])}
                if not projected or not any(token_file.startswith(mounts.get(v["name"], "//")) for v in projected):
                    fail(w, "the token file must come from a projected, audience-bound volume")
                if s.get("serviceAccount") != "otel-collector":
                    fail(w, "serviceAccount must be otel-collector (the ingest identity)")
                sc = s.get("securityContext", {})
                if not (sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False
                        and sc.get("capabilities", {}).get("drop") == ["ALL"]):
                    fail(w, "collector container not hardened")
            elif k == "AuthorizationPolicy":
                if s.get("action") == "CUSTOM":
                    if get(s, "provider.name") != "tenant-authz":
                        fail(w, "CUSTOM provider must be tenant-authz")
                    if not get(s, "selector.matchLabels"):
                        fail(w, "a CUSTOM policy must select its workload")
                    for r in s.get("rules", []):
                        for t in r.get("to", []):
                            if not get(t, "operation.ports"):
                                fail(w, "rules must match ports: HTTP-only fields alone skip TCP traffic")
            elif k == "PeerAuthentication":
                if get(s, "mtls.mode") != "STRICT":
                    fail(w, "mtls.mode must be STRICT")
            elif k == "Certificate":
                if not s.get("secretName", "").endswith("-tls") or not s.get("dnsNames") or not s.get("issuerRef"):
                    fail(w, "secretName *-tls, dnsNames and issuerRef required")
                # cert-manager v1.21 copies usages into the certificate unchecked; "key
                # encipherment" is an RSA usage, not one for EC keys (RFC 5480).
                if get(s, "privateKey.algorithm") == "ECDSA" and "key encipherment" in s.get("usages", []):
                    fail(w, "ECDSA key with the RSA-only usage 'key encipherment'")
    # The Istio overlay protects both Tempo entry points.
    istio = builds.get("overlays/istio", [])
    comps = {get(d, "spec.selector.matchLabels", {}).get("app.kubernetes.io/component")
             for d in istio if d.get("kind") == "AuthorizationPolicy" and get(d, "spec.action") == "CUSTOM"}
    if comps != {"distributor", "query-frontend"}:
        fail("overlays/istio", f"CUSTOM policies cover {comps}, want distributor and query-frontend")


# ------------------------------------------------------------------ posture
def containers(spec):
    return spec.get("initContainers", []) + spec.get("containers", [])


def check_pods(builds):
    group("every Pod template is hardened (non-root, read-only root, no capabilities, seccomp, probes, resources)")
    n = 0
    for build, docs in builds.items():
        for d in docs:
            if d.get("kind") not in POD_TEMPLATE_KINDS:
                continue
            n += 1
            w = f"{build} {name_of(d)}"
            pod = get(d, "spec.template.spec", {})
            psc = pod.get("securityContext", {})
            if psc.get("runAsNonRoot") is not True:
                fail(w, "pod securityContext.runAsNonRoot must be true")
            if get(psc, "seccompProfile.type") != "RuntimeDefault":
                fail(w, "pod seccompProfile must be RuntimeDefault")
            if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
                fail(w, "host namespaces are not allowed")
            for c in containers(pod):
                cw = f"{w} container {c['name']}"
                sc = c.get("securityContext", {})
                if sc.get("readOnlyRootFilesystem") is not True:
                    fail(cw, "readOnlyRootFilesystem must be true")
                if sc.get("allowPrivilegeEscalation") is not False:
                    fail(cw, "allowPrivilegeEscalation must be false")
                if sc.get("privileged"):
                    fail(cw, "privileged")
                if get(sc, "capabilities.drop") != ["ALL"] or get(sc, "capabilities.add"):
                    fail(cw, "capabilities must drop ALL and add none")
                if sc.get("runAsNonRoot") is False or sc.get("runAsUser") == 0:
                    fail(cw, "runs as root")
                if get(sc, "seccompProfile.type", "RuntimeDefault") != "RuntimeDefault":
                    fail(cw, "seccompProfile must be RuntimeDefault")
                res = c.get("resources", {})
                if not (get(res, "requests.cpu") and get(res, "requests.memory") and get(res, "limits.memory")):
                    fail(cw, "requests.cpu, requests.memory and limits.memory required")
                if not c.get("readinessProbe") or not c.get("livenessProbe"):
                    fail(cw, "readiness and liveness probes required")
    print(f"    {n} pod templates")


def check_tenant_authz_pod(builds):
    group("tenant-authz: 2+ replicas (HPA-owned), spread, probes on the admin port, image, grace >= delay + grace")
    for build, docs in builds.items():
        for d in docs:
            if d.get("kind") != "Deployment" or get(d, "metadata.name") != "tenant-authz":
                continue
            w = f"{build} {name_of(d)}"
            pod = get(d, "spec.template.spec")
            c = pod["containers"][0]
            # The HPA owns the replica count: a written `replicas` resets it on every apply.
            if "replicas" in d["spec"]:
                fail(w, "no spec.replicas: the HorizontalPodAutoscaler owns it")
            hpas = [h for h in docs if h.get("kind") == "HorizontalPodAutoscaler"
                    and get(h, "spec.scaleTargetRef.kind") == "Deployment"
                    and get(h, "spec.scaleTargetRef.name") == "tenant-authz"]
            if len(hpas) != 1 or (get(hpas[0], "spec.minReplicas") or 0) < 2:
                fail(w, "one HorizontalPodAutoscaler with minReplicas >= 2 must own the replicas")
            if not pod.get("topologySpreadConstraints"):
                fail(w, "topologySpreadConstraints required")
            if get(c, "livenessProbe.httpGet.path") != "/healthz" or get(c, "readinessProbe.httpGet.path") != "/readyz":
                fail(w, "liveness /healthz, readiness /readyz")
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            if ports.get("admin") != 9090 or ports.get("grpc") != 9001 or get(c, "readinessProbe.httpGet.port") != "admin":
                fail(w, f"ports grpc 9001 / admin 9090, probes on admin; got {ports}")
            if c.get("image") != "ghcr.io/tenant-authz/tenant-authz:0.1.0":
                fail(w, f"image {c.get('image')}")
            if pod.get("automountServiceAccountToken") is not True:
                fail(w, "needs its ServiceAccount token for the API")
            psc = pod.get("securityContext", {})
            if psc.get("runAsUser") != 65532:
                fail(w, "runAsUser 65532")
            cms = [v["configMap"]["name"] for v in pod.get("volumes", []) if "configMap" in v]
            cfg_docs = [x for x in docs if x.get("kind") == "ConfigMap" and get(x, "metadata.name") in cms]
            if not cfg_docs:
                fail(w, "config ConfigMap not found")
                continue
            cfg = yaml.safe_load(cfg_docs[0]["data"]["config.yaml"])
            delay = parse_seconds(get(cfg, "shutdown.delay", "0s"))
            grace = parse_seconds(get(cfg, "shutdown.grace", "10s"))
            tgp = pod.get("terminationGracePeriodSeconds", 30)
            if delay < 5 or tgp < delay + grace:
                fail(w, f"shutdown.delay {delay}s (>= 5s) + grace {grace}s must fit terminationGracePeriodSeconds {tgp}")
            if get(cfg, "log.format") != "json" or cfg.get("backend") != "kubernetes":
                fail(w, "config: log.format json, backend kubernetes")


def parse_seconds(s):
    m = re.fullmatch(r"(\d+)(ms|s|m)", str(s))
    if not m:
        return -1
    v = int(m.group(1))
    return {"ms": v / 1000, "s": v, "m": v * 60}[m.group(2)]


def check_rbac(builds):
    group("RBAC least privilege: tenant-authz creates the two reviews and lists/watches only what decides them; tenants get/create traces in their namespace; no wildcards")
    for build, docs in builds.items():
        for d in docs:
            k, w = d.get("kind"), f"{build} {name_of(d)}"
            if k not in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"):
                continue
            for r in d.get("rules", []):
                for f in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                    if "*" in r.get(f, []):
                        fail(w, f"wildcard in {f}")
            if k == "ClusterRole":
                if get(d, "metadata.name") != "tenant-authz":
                    fail(w, "unexpected ClusterRole")
                # The two reviews, and list/watch of what tenant-authz's watches ask for
                # (src/review/kube/watch.rs; tests/revocation.rs pins the requests).
                want = [{"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
                        {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
                        {"apiGroups": ["rbac.authorization.k8s.io"],
                         "resources": ["roles", "rolebindings", "clusterroles", "clusterrolebindings"],
                         "verbs": ["list", "watch"]},
                        {"apiGroups": [""], "resources": ["namespaces", "serviceaccounts"], "verbs": ["list", "watch"]}]
                if sorted(d.get("rules", []), key=str) != sorted(want, key=str):
                    fail(w, f"rules must be exactly {want}")
            elif k == "ClusterRoleBinding":
                subj = d.get("subjects", [])
                if get(d, "roleRef.name") != "tenant-authz" or subj != [
                        {"kind": "ServiceAccount", "name": "tenant-authz", "namespace": "monitoring"}]:
                    fail(w, "only tenant-authz's ServiceAccount, only its ClusterRole")
            elif k == "Role":
                for r in d.get("rules", []):
                    if r.get("apiGroups") != ["tempo.grafana.com"] or r.get("resources") != ["traces"] \
                            or r.get("verbs") not in (["get"], ["create"]) or r.get("resourceNames"):
                        fail(w, f"tenant Roles grant only get or create on traces.tempo.grafana.com: {r}")
            elif k == "RoleBinding":
                ns = get(d, "metadata.namespace")
                if get(d, "roleRef.kind") != "Role":
                    fail(w, "tenant RoleBindings bind a Role of their namespace, not a ClusterRole")
                for sub in d.get("subjects", []):
                    if sub.get("kind") == "ServiceAccount" and sub.get("namespace") != ns:
                        fail(w, f"subject {sub} is not of the namespace {ns}")
                    if sub.get("kind") == "Group" and sub.get("name") in ("system:authenticated", "system:serviceaccounts"):
                        fail(w, f"binding to {sub['name']} grants every tenant")


def check_secrets(builds):
    group("no Secret carries a real credential (placeholders only)")
    for build, docs in builds.items():
        for d in docs:
            if d.get("kind") != "Secret":
                continue
            w = f"{build} {name_of(d)}"
            if d.get("type") == "kubernetes.io/service-account-token":
                if d.get("data") or d.get("stringData"):
                    fail(w, "a ServiceAccount token Secret is filled by Kubernetes, never in Git")
                continue
            if d.get("type") == "kubernetes.io/tls":
                fail(w, "TLS keys come from cert-manager or out of band, never from Git")
            import base64
            values = dict(d.get("stringData", {}))
            for key, v in d.get("data", {}).items():
                values[key] = base64.b64decode(v).decode("utf-8", "replace")
            for key, v in values.items():
                if not PLACEHOLDER.search(v):
                    fail(w, f"{key} is not a CHANGE-ME placeholder")
            if get(d, "metadata.name") == "tempo-storage":
                for key in ("bucket", "endpoint", "access_key_id", "access_key_secret"):
                    if key not in values:
                        fail(w, f"the Tempo Operator's S3 key {key} is missing")
                if not values.get("endpoint", "").startswith("https://"):
                    fail(w, "endpoint needs its scheme (https://s3.<region>.backblazeb2.com)")


def check_envoy_configs(builds, repo):
    group("the frontends' ConfigMaps equal envoy/*.yaml byte for byte, and are what the Deployments mount")
    want = {"tempo-querier-frontend": "query-frontend.yaml", "tempo-ingester-frontend": "ingest-frontend.yaml"}
    checked = 0
    # The builds that include envoy/kustomization.yaml (a frontend's own folder only names it).
    for build in ("base", "overlays/default"):
        docs = builds.get(build, [])
        cms = {get(d, "metadata.name"): d for d in docs if d.get("kind") == "ConfigMap"}
        for d in docs:
            if d.get("kind") != "Deployment" or get(d, "metadata.name") not in want:
                continue
            name = get(d, "metadata.name")
            w = f"{build} {name_of(d)}"
            pod = get(d, "spec.template.spec")
            cm_name = [v["configMap"]["name"] for v in pod["volumes"] if v["name"] == "config"][0]
            if cm_name not in cms:
                fail(w, f"mounts ConfigMap {cm_name}, which this build does not contain")
                continue
            with open(os.path.join(repo, "envoy", want[name]), "rb") as fh:
                expected = fh.read().decode("utf-8")
            if cms[cm_name]["data"].get("envoy.yaml") != expected:
                fail(w, f"ConfigMap {cm_name} differs from envoy/{want[name]}")
            c = pod["containers"][0]
            if c.get("image") != "envoyproxy/envoy:v1.40.0" or c.get("args", [])[:2] != ["-c", "/etc/envoy/envoy.yaml"]:
                fail(w, "image envoyproxy/envoy:v1.40.0, args -c /etc/envoy/envoy.yaml")
            mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
            tls = [v for v in pod["volumes"] if v["name"] == "tls"]
            if mounts.get("tls") != "/etc/tenant-authz/tls" or not tls or tls[0]["secret"]["secretName"] != f"{name}-tls":
                fail(w, f"TLS Secret {name}-tls mounted at /etc/tenant-authz/tls")
            if get(c, "readinessProbe.httpGet.path") != "/ready" or get(c, "readinessProbe.httpGet.port") not in (9902, "metrics"):
                fail(w, "readiness on :9902/ready")
            checked += 1
    if checked != 4:
        fail("builds", f"{checked} frontend Deployments in base and overlays/default, want 4")
    print(f"    {checked} frontend Deployments")


def check_services(builds):
    group("every Service port is named and has an appProtocol; the seed's ports")
    want = {"tenant-authz": {"grpc": (9001, "kubernetes.io/h2c"), "admin": (9090, "http")},
            "tempo-querier-frontend": {"https": (3200, None)},
            "tempo-ingester-frontend": {"otlp-grpc": (4317, None), "otlp-http": (4318, None)}}
    for build, docs in builds.items():
        for d in docs:
            if d.get("kind") != "Service":
                continue
            w = f"{build} {name_of(d)}"
            ports = {}
            for p in get(d, "spec.ports", []):
                if not p.get("name") or not p.get("appProtocol"):
                    fail(w, f"port {p.get('port')} needs a name and an appProtocol")
                ports[p.get("name")] = (p.get("port"), p.get("appProtocol"))
            for pname, (num, proto) in want.get(get(d, "metadata.name"), {}).items():
                got = ports.get(pname)
                if not got or got[0] != num or (proto and not build.startswith("overlays/istio") and got[1] != proto):
                    fail(w, f"port {pname} {num} {proto or ''}: got {got}")


def check_network_policies(builds):
    group("NetworkPolicies: only the ingester frontend reaches the distributor, only the querier frontend the query frontend")
    for build in ("base", "overlays/default"):
        docs = builds.get(build, [])
        nps = {get(d, "metadata.name"): d for d in docs if d.get("kind") == "NetworkPolicy"}
        for name, frontend, ports in (
                ("tempo-distributor", "tempo-ingester-frontend", {(4317, "TCP"), (4318, "TCP"), (14268, "TCP"), (14250, "TCP"), (6831, "UDP"), (6832, "UDP"), (9411, "TCP")}),
                ("tempo-query-frontend", "tempo-querier-frontend", {(3200, "TCP")})):
            np = nps.get(name)
            if not np:
                fail(build, f"NetworkPolicy {name} missing")
                continue
            for rule in get(np, "spec.ingress", []):
                peers = rule.get("from", [])
                if peers != [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": frontend}}}]:
                    fail(f"{build} {name}", f"a peer other than {frontend}: {peers}")
            got = {(p["port"], p.get("protocol", "TCP")) for r in get(np, "spec.ingress", []) for p in r.get("ports", [])}
            if got != ports:
                fail(f"{build} {name}", f"ports {sorted(got)}, want {sorted(ports)}")
        ta = nps.get("tenant-authz")
        if not ta:
            fail(build, "NetworkPolicy tenant-authz missing")
        else:
            for rule in get(ta, "spec.ingress", []):
                for peer in rule.get("from", []):
                    if peer.get("namespaceSelector") == {} or peer == {}:
                        fail(f"{build} tenant-authz", "open to every namespace")


def check_config_parses(builds, binary):
    group("the tenant-authz config in the ConfigMap parses with the real binary (--print-config)")
    seen = set()
    for build, docs in builds.items():
        for d in docs:
            if d.get("kind") == "ConfigMap" and get(d, "metadata.name", "").startswith("tenant-authz-config"):
                text = d["data"]["config.yaml"]
                if text in seen:
                    continue
                seen.add(text)
                with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
                    fh.write(text)
                try:
                    r = subprocess.run([binary, "--config", fh.name, "--print-config"],
                                       capture_output=True, text=True, timeout=60)
                finally:
                    os.unlink(fh.name)
                if r.returncode != 0:
                    fail(f"{build} {name_of(d)}", f"tenant-authz rejects it: {r.stderr.strip()}")
                    continue
                eff = yaml.safe_load(r.stdout)
                if get(eff, "shutdown.delay") not in ("5s",) or get(eff, "log.format") != "json":
                    fail(f"{build} {name_of(d)}", f"effective config differs: shutdown {get(eff, 'shutdown')}, log.format {get(eff, 'log.format')}")
                print(f"    {name_of(d)}: ok")
    if not seen:
        fail("builds", "no tenant-authz-config ConfigMap")


def check_mesh_config(repo):
    group("overlays/istio/mesh-config-patch.yaml: the provider the AuthorizationPolicies name, fail closed")
    with open(os.path.join(repo, "manifests/overlays/istio/mesh-config-patch.yaml")) as fh:
        doc = yaml.safe_load(fh)
    provs = {p["name"]: p for p in get(doc, "meshConfig.extensionProviders", [])}
    p = get(provs.get("tenant-authz", {}), "envoyExtAuthzGrpc", {})
    want = {"service": "tenant-authz.monitoring.svc.cluster.local", "port": 9001, "timeout": "2s",
            "failOpen": False, "statusOnError": "503"}
    for k, v in want.items():
        if p.get(k) != v:
            fail("mesh-config-patch.yaml", f"envoyExtAuthzGrpc.{k} = {p.get(k)!r}, want {v!r}")
    # Tempo's memberlist port (the operator names it http-memberlist) bypasses the sidecars.
    for k in ("excludeInboundPorts", "excludeOutboundPorts"):
        ports = str(get(doc, f"global.proxy.{k}", "")).split(",")
        if "7946" not in [x.strip() for x in ports]:
            fail("mesh-config-patch.yaml", f"global.proxy.{k} must contain 7946 (Tempo's memberlist)")


def main():
    repo, built_dir, binary = sys.argv[1:4]
    builds = load(built_dir)
    check_schemas(builds)
    check_crds(builds)
    check_pods(builds)
    check_tenant_authz_pod(builds)
    check_rbac(builds)
    check_secrets(builds)
    check_envoy_configs(builds, repo)
    check_services(builds)
    check_network_policies(builds)
    check_config_parses(builds, binary)
    check_mesh_config(repo)
    group(None)
    print("all manifest checks passed")


if __name__ == "__main__":
    main()
