//! A tiny classifier for in-process training tests: mean of masked token embeddings ->
//! LayerNorm -> dropout -> linear, with Hugging Face-style variable names (`embeddings.*`,
//! `classifier.*`) so weight-decay groups and checkpoint names behave as with a real model.
#![allow(dead_code)] // each test crate uses a different subset

use rand::{Rng, SeedableRng};
use tch::{nn, nn::Module, Device, Kind, Tensor};
use txcat::hyperparams::Hyperparameters;
use txcat::model::ClassifierModel;

/// Token ids the synthetic sets use.
pub const VOCAB: i64 = 64;
/// Classes of the synthetic sets.
pub const CLASSES: usize = 4;

/// Label names `CLASS_0..` of the synthetic sets.
pub fn class_names() -> Vec<String> {
    (0..CLASSES).map(|c| format!("CLASS_{c}")).collect()
}

/// The tiny tests' training settings over `epochs`: batch 8 (20 steps an epoch on 160 rows),
/// lr 5e-2 with 10% warm-up, seed 7.
pub fn hyperparameters(epochs: f64) -> Hyperparameters {
    Hyperparameters {
        epochs,
        train_batch_size: 8,
        eval_batch_size: 16,
        learning_rate: 5e-2,
        warmup_ratio: 0.1,
        logging_steps: 10,
        seed: 7,
        ..Hyperparameters::default()
    }
}

/// libtorch's RNG is process-global: tests that seed it must not interleave.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds the lock that serialises RNG-seeding tests.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct Tiny {
    pub vs: nn::VarStore,
    emb: nn::Embedding,
    norm: nn::LayerNorm,
    classifier: nn::Linear,
    dropout: f64,
    /// Sparse lookup gradients, as the trainer asks for on the CPU.
    sparse: bool,
}

impl Tiny {
    /// Weights drawn after seeding libtorch with `seed`.
    pub fn new(seed: i64, classes: usize, dropout: f64) -> Self {
        tch::manual_seed(seed);
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let emb = nn::embedding(
            root.sub("embeddings").sub("word_embeddings"),
            VOCAB,
            16,
            Default::default(),
        );
        let norm = nn::layer_norm(
            root.sub("embeddings").sub("LayerNorm"),
            vec![16],
            Default::default(),
        );
        let classifier = nn::linear(
            root.sub("classifier"),
            16,
            classes as i64,
            Default::default(),
        );
        Self {
            vs,
            emb,
            norm,
            classifier,
            dropout,
            sparse: false,
        }
    }

    /// Copies of every variable, sorted by name.
    pub fn weights(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = self
            .vs
            .variables()
            .into_iter()
            .map(|(k, t)| (k, t.detach().copy()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

impl ClassifierModel for Tiny {
    fn forward_t(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        _types: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        // ids, mask [b, s] -> [b, s, 16] -> masked mean [b, 16] -> logits [b, classes]
        let m = mask.to_kind(Kind::Float).unsqueeze(-1);
        let pooled = (Tensor::embedding(&self.emb.ws, ids, -1, false, self.sparse) * &m)
            .sum_dim_intlist(1, false, Kind::Float)
            / m.sum_dim_intlist(1, false, Kind::Float).clamp_min(1.0);
        let h = self.norm.forward(&pooled).dropout(self.dropout, train);
        self.classifier.forward(&h)
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }
    fn input_table(&self) -> Option<String> {
        Some("embeddings.word_embeddings.weight".into())
    }
    fn set_sparse_input_grad(&mut self, sparse: bool) {
        self.sparse = sparse;
    }
}

/// Token rows `[CLS, noise..., keyword of the class, noise..., SEP]` (lengths 4..=14) with their
/// class: a set a bag-of-embeddings model separates, seeded.
pub fn synthetic_rows(rows: usize, seed: u64) -> Vec<(Vec<u32>, u32)> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..rows)
        .map(|i| {
            let label = (i % CLASSES) as u32;
            let len = rng.gen_range(2..=12);
            let mut ids = vec![1u32];
            let at = rng.gen_range(0..len);
            for j in 0..len {
                ids.push(if j == at {
                    10 + label * 5 + rng.gen_range(0..5)
                } else {
                    40 + rng.gen_range(0..20)
                });
            }
            ids.push(2);
            (ids, label)
        })
        .collect()
}
