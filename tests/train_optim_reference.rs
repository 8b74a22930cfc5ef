//! AdamW + global-norm clipping against PyTorch's `torch.optim.AdamW` and
//! `torch.nn.utils.clip_grad_norm_` on the same tensors, gradients and learning rates.

mod support;

use tch::{nn, Device, Kind, Tensor};
use txcat::train::optim::{AdamW, AdamWConfig};

const PY: &str = r#"
import json, sys, torch
d = json.load(sys.stdin)
torch.set_default_dtype(torch.float32)
params = {n: torch.tensor(v["init"], dtype=torch.float32).reshape(v["shape"]).requires_grad_() for n, v in d["vars"].items()}
decay = [params[n] for n in d["decay"]]
no_decay = [p for n, p in params.items() if n not in d["decay"]]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": d["wd"]}, {"params": no_decay, "weight_decay": 0.0}],
                        lr=1.0, betas=(0.9, 0.999), eps=1e-8, foreach=False)
norms = []
for step, lr in enumerate(d["lrs"]):
    for n, p in params.items():
        p.grad = torch.tensor(d["vars"][n]["grads"][step], dtype=torch.float32).reshape(d["vars"][n]["shape"])
    norms.append(float(torch.nn.utils.clip_grad_norm_(list(params.values()), d["max_norm"])))
    for g in opt.param_groups:
        g["lr"] = lr
    opt.step()
out = {"norms": norms, "params": {n: p.detach().reshape(-1).tolist() for n, p in params.items()},
       "exp_avg": {n: opt.state[p]["exp_avg"].reshape(-1).tolist() for n, p in params.items()},
       "exp_avg_sq": {n: opt.state[p]["exp_avg_sq"].reshape(-1).tolist() for n, p in params.items()}}
print(json.dumps(out))
"#;

/// `vs` path for a dotted prefix (tch rejects dots inside one `sub`).
fn path<'a>(vs: &'a nn::VarStore, dotted: &str) -> nn::Path<'a> {
    dotted.split('.').fold(vs.root(), |p, part| p.sub(part))
}

fn values(n: usize, phase: f32, scale: f32, f: fn(f32) -> f32) -> Vec<f32> {
    (0..n).map(|i| f(i as f32 * 0.7 + phase) * scale).collect()
}

#[test]
fn adamw_and_clipping_match_pytorch() {
    let specs: [(&str, &str, Vec<i64>); 3] = [
        ("layer", "weight", vec![3, 4]),
        ("layer", "bias", vec![4]),
        ("embeddings.LayerNorm", "weight", vec![4]),
    ];
    let lrs = [1e-2, 5e-3, 2e-3, 1e-3, 4e-3];
    // Step 0 has large gradients (clipped to norm 1), the rest small ones (not clipped).
    let grad_scale = [3.0f32, 0.01, 0.02, 0.5, 0.001];
    let (wd, max_norm) = (0.1, 1.0);

    let vs = nn::VarStore::new(Device::Cpu);
    let mut vars = Vec::new();
    let mut json_vars = serde_json::Map::new();
    for (k, (path_name, leaf, shape)) in specs.iter().enumerate() {
        let numel: i64 = shape.iter().product();
        let init = values(numel as usize, k as f32, 0.5, f32::sin);
        let t = Tensor::from_slice(&init).reshape(shape.as_slice());
        let var = path(&vs, path_name).var_copy(leaf, &t);
        let grads: Vec<Vec<f32>> = (0..lrs.len())
            .map(|s| {
                values(
                    numel as usize,
                    k as f32 + 1.3 * s as f32,
                    grad_scale[s],
                    f32::cos,
                )
            })
            .collect();
        json_vars.insert(
            format!("{path_name}.{leaf}"),
            serde_json::json!({"init": init, "shape": shape, "grads": grads}),
        );
        vars.push((format!("{path_name}.{leaf}"), var, grads, shape.clone()));
    }
    let mut opt = AdamW::new(
        &vs,
        AdamWConfig {
            weight_decay: wd,
            head_lr_scale: 1.0,
            ..AdamWConfig::default()
        },
    )
    .unwrap();
    assert_eq!(opt.decay_names(), vec!["layer.weight"]);

    let mut norms = Vec::new();
    for (step, &lr) in lrs.iter().enumerate() {
        // loss = sum(p * G) makes each gradient exactly G.
        let loss = vars
            .iter()
            .map(|(_, v, g, shape)| {
                (v * Tensor::from_slice(&g[step]).reshape(shape.as_slice())).sum(Kind::Float)
            })
            .fold(Tensor::zeros([], (Kind::Float, Device::Cpu)), |a, b| a + b);
        opt.backward(&loss).unwrap();
        norms.push(opt.clip_grad_norm(max_norm).unwrap().double_value(&[]));
        opt.step(lr).unwrap();
        opt.zero_grad().unwrap();
    }

    let input = serde_json::json!({
        "vars": json_vars, "decay": ["layer.weight"], "wd": wd, "max_norm": max_norm, "lrs": lrs,
    });
    let reference = support::python::run_json(PY, &input, "PyTorch AdamW reference");

    let ref_norms: Vec<f64> = serde_json::from_value(reference["norms"].clone()).unwrap();
    assert!(
        ref_norms[0] > max_norm * 2.0,
        "step 0 must exercise clipping"
    );
    for (a, b) in norms.iter().zip(&ref_norms) {
        assert!(
            (a - b).abs() <= 1e-6 * b.max(1.0),
            "norms {norms:?} vs {ref_norms:?}"
        );
    }
    let state = opt.export_state().unwrap();
    assert_eq!(state.step, lrs.len() as u64);
    for (name, var, _, _) in &vars {
        let mine = |t: &Tensor| Vec::<f32>::try_from(t.reshape([-1])).unwrap();
        let exported = state.vars.iter().find(|v| &v.name == name).unwrap();
        for (got, key) in [
            (mine(var), "params"),
            (mine(&exported.exp_avg), "exp_avg"),
            (mine(&exported.exp_avg_sq), "exp_avg_sq"),
        ] {
            let want: Vec<f64> = serde_json::from_value(reference[key][name].clone()).unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (*g as f64 - w).abs() <= 1e-6,
                    "{key} of {name}: {got:?} vs {want:?}"
                );
            }
        }
    }

    // Export/import round trip: a fresh optimizer continues exactly like the original.
    let vs2 = nn::VarStore::new(Device::Cpu);
    let mut vars2 = Vec::new();
    for (name, var, _, shape) in &vars {
        let (prefix, leaf) = name.rsplit_once('.').unwrap();
        let v2 = path(&vs2, prefix).var_copy(leaf, &var.detach().copy());
        vars2.push((v2, shape.clone()));
    }
    let mut opt2 = AdamW::new(
        &vs2,
        AdamWConfig {
            weight_decay: wd,
            head_lr_scale: 1.0,
            ..AdamWConfig::default()
        },
    )
    .unwrap();
    opt2.import_state(&state).unwrap();
    for (o, vv) in [
        (
            &mut opt,
            vars.iter()
                .map(|v| (v.1.shallow_clone(), v.3.clone()))
                .collect::<Vec<_>>(),
        ),
        (&mut opt2, vars2),
    ] {
        let loss = vv
            .iter()
            .map(|(v, shape)| {
                (v * Tensor::ones(shape.as_slice(), (Kind::Float, Device::Cpu))).sum(Kind::Float)
            })
            .fold(Tensor::zeros([], (Kind::Float, Device::Cpu)), |a, b| a + b);
        o.backward(&loss).unwrap();
        o.step(1e-3).unwrap();
    }
    for ((_, a, _, _), (name, b)) in vars.iter().zip(
        vars.iter()
            .map(|(n, _, _, _)| (n.clone(), vs2.variables()[n].shallow_clone())),
    ) {
        assert!(a.equal(&b), "{name} differs after import");
    }
}
