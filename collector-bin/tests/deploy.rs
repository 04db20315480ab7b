//! The deployment files: Kubernetes manifests have the structure the API
//! needs (no schema checker installs here), the overlay merges over the
//! production config and validates, the compose file and the ECS task
//! definition parse, and every image tag is the VERSION.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml(p: &str) -> serde_json::Value {
    serde_yaml::from_str(&std::fs::read_to_string(root().join(p)).unwrap())
        .unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn version() -> String {
    std::fs::read_to_string(root().join("VERSION"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn kubernetes_manifests_have_the_required_structure() {
    let expected = [
        (
            "deploy/kubernetes/statefulset.yaml",
            "apps/v1",
            "StatefulSet",
        ),
        ("deploy/kubernetes/service.yaml", "v1", "Service"),
        ("deploy/kubernetes/configmap.yaml", "v1", "ConfigMap"),
        ("deploy/kubernetes/secret.yaml", "v1", "Secret"),
        (
            "deploy/kubernetes/hpa.yaml",
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
        ),
    ];
    for (file, api, kind) in expected {
        let d = yaml(file);
        assert_eq!(
            (d["apiVersion"].as_str(), d["kind"].as_str()),
            (Some(api), Some(kind)),
            "{file}"
        );
        assert_eq!(d["metadata"]["name"], "otelcol-multitudes", "{file}");
    }
    let dep = yaml("deploy/kubernetes/statefulset.yaml");
    let spec = &dep["spec"];
    assert_eq!(
        spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"],
        "the selector matches the pod labels"
    );
    let c = &spec["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], format!("otelcol-multitudes:{}", version()));
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], 13133);
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], 13133);
    assert_eq!(
        c["env"][1]["valueFrom"]["secretKeyRef"]["name"],
        "otelcol-multitudes"
    );
    let secret = yaml("deploy/kubernetes/secret.yaml");
    assert!(secret["stringData"]["token"].is_string());
    let mount = &c["volumeMounts"][0]["mountPath"];
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args[3],
        format!("{}/overrides.yaml", mount.as_str().unwrap())
    );
    // The persistent sending queue: one claim per replica, at the
    // directory the production config's file_storage uses.
    assert_eq!(c["volumeMounts"][1]["name"], "storage");
    assert_eq!(
        c["volumeMounts"][1]["mountPath"],
        "/var/lib/otelcol-multitudes"
    );
    assert_eq!(
        spec["volumeClaimTemplates"][0]["metadata"]["name"],
        "storage"
    );
    assert_eq!(
        spec["template"]["spec"]["securityContext"]["fsGroup"],
        65532
    );
    let hpa = yaml("deploy/kubernetes/hpa.yaml");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "otelcol-multitudes");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "StatefulSet");
    let svc = yaml("deploy/kubernetes/service.yaml");
    let ports: Vec<i64> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_i64().unwrap())
        .collect();
    assert_eq!(ports, vec![4317, 4318]);
}

#[test]
fn the_overlay_merges_over_the_production_config_and_validates() {
    let cm = yaml("deploy/kubernetes/configmap.yaml");
    let overlay = cm["data"]["overrides.yaml"].as_str().unwrap().to_string();
    let base = std::fs::read_to_string(root().join("configs/otel-collector-config.yaml")).unwrap();
    let env = |k: &str| match k {
        "MULTITUDES_INTEGRATION_ENDPOINT" => {
            Some("https://integrations.multitudes.co/ai/otel".to_string())
        }
        "MULTITUDES_INTEGRATION_TOKEN" => Some("t".to_string()),
        _ => None,
    };
    let sources = [
        otelcol_core::config::ConfigSource::Text {
            name: "image".into(),
            yaml: base,
        },
        otelcol_core::config::ConfigSource::Text {
            name: "overrides".into(),
            yaml: overlay,
        },
    ];
    let loaded = otelcol_core::config::load(&sources, &[], &env).unwrap();
    otelcol_core::pipeline::validate(&loaded.config, &otelcol_multitudes::factories()).unwrap();
}

/// The two-tier variant: the gateways' DNS name is the aggregators'
/// headless Service, which the StatefulSet is governed by; the gateway
/// config is in the image; every tag is the VERSION; the gateway config
/// validates.
#[test]
fn the_two_tier_files_fit_together() {
    let dir = "deploy/kubernetes/two-tier";
    let headless = yaml(&format!("{dir}/aggregator-service.yaml"));
    assert_eq!(headless["spec"]["clusterIP"], "None");
    let name = headless["metadata"]["name"].as_str().unwrap();
    let sts = yaml(&format!("{dir}/aggregator-statefulset.yaml"));
    assert_eq!(sts["spec"]["serviceName"], name);
    assert_eq!(
        sts["spec"]["selector"]["matchLabels"],
        headless["spec"]["selector"]
    );
    let gw = yaml(&format!("{dir}/gateway-deployment.yaml"));
    let c = &gw["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["env"][0]["name"], "OTELCOL_AGGREGATORS_HOST");
    assert_eq!(c["env"][0]["value"], name);
    assert_eq!(c["args"][1], "/etc/otelcol-multitudes/gateway.yaml");
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("COPY configs/gateway.yaml /etc/otelcol-multitudes/gateway.yaml"));
    for d in [&sts, &gw] {
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["image"],
            format!("otelcol-multitudes:{}", version())
        );
    }
    let svc = yaml(&format!("{dir}/gateway-service.yaml"));
    assert_eq!(
        svc["spec"]["selector"],
        gw["spec"]["selector"]["matchLabels"]
    );
    let compose = yaml("deploy/docker-compose.two-tier.yml");
    assert_eq!(
        compose["services"]["gateway"]["environment"]["OTELCOL_AGGREGATORS_HOST"],
        "aggregators"
    );
    // The aggregators share the `x-aggregator` block (a YAML merge key).
    assert_eq!(
        compose["x-aggregator"]["image"],
        format!("otelcol-multitudes:{}", version())
    );
    assert_eq!(
        compose["x-aggregator"]["networks"]["default"]["aliases"][0],
        "aggregators"
    );
    let gateway = std::fs::read_to_string(root().join("configs/gateway.yaml")).unwrap();
    let sources = [otelcol_core::config::ConfigSource::Text {
        name: "gateway".into(),
        yaml: gateway,
    }];
    let loaded = otelcol_core::config::load(&sources, &[], &|_| None).unwrap();
    otelcol_core::pipeline::validate(&loaded.config, &otelcol_multitudes::factories()).unwrap();
}

#[test]
fn compose_and_ecs_parse() {
    let compose = yaml("deploy/docker-compose.yml");
    let c = &compose["services"]["collector"];
    assert_eq!(c["image"], format!("otelcol-multitudes:{}", version()));
    assert_eq!(c["healthcheck"]["test"][1], "/otelcol-multitudes");
    let s3 = yaml("deploy/docker-compose.s3.yml");
    let c = &s3["services"]["collector"];
    assert_eq!(c["image"], format!("otelcol-multitudes:{}", version()));
    assert_eq!(c["command"][1], "/etc/otelcol-multitudes/s3.yaml");
    assert_eq!(
        c["volumes"][0],
        "../configs/s3.yaml:/etc/otelcol-multitudes/s3.yaml:ro"
    );
    assert!(root().join("configs/s3.yaml").exists());
    for var in [
        "S3_BUCKET",
        "S3_ENDPOINT",
        "S3_PATH_STYLE",
        "S3_DISABLE_SSL",
    ] {
        assert!(
            std::fs::read_to_string(root().join("configs/s3.yaml"))
                .unwrap()
                .contains(&format!("${{env:{var}")),
            "configs/s3.yaml reads {var}"
        );
        assert!(c["environment"][var].is_string(), "compose sets {var}");
    }
    let ecs: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/ecs/task-definition.json")).unwrap(),
    )
    .unwrap();
    let c = &ecs["containerDefinitions"][0];
    assert!(c["image"]
        .as_str()
        .unwrap()
        .ends_with(&format!("otelcol-multitudes:{}", version())));
    assert_eq!(c["healthCheck"]["command"][2], "healthcheck");
    assert_eq!(c["secrets"][0]["name"], "MULTITUDES_INTEGRATION_TOKEN");
    assert_eq!(
        c["mountPoints"][0]["containerPath"],
        "/var/lib/otelcol-multitudes"
    );
    assert_eq!(
        ecs["volumes"][0]["name"],
        c["mountPoints"][0]["sourceVolume"]
    );
    let compose = yaml("deploy/docker-compose.yml");
    assert_eq!(
        compose["services"]["collector"]["volumes"][0],
        "otelcol-storage:/var/lib/otelcol-multitudes"
    );
}
