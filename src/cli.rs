//! Command-line interface (clap derive).
//!
//! `txcat` with no subcommand means `txcat train`, because some SageMaker launchers (entrypoint
//! overrides, SDK v3 local mode) pass no `train` word. New commands are new [`Command`] variants.
//! Invariant: parsing only; nothing here touches files.

use crate::hyperparams::{CsvDelimiter, CsvEncoding};
use clap::{Args, Parser, Subcommand};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

/// Fine-tunes DistilBERT/BERT text classifiers on CSV channels (a SageMaker training entrypoint).
#[derive(Debug, Parser)]
#[command(name = "txcat", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a classifier from the SageMaker layout (the default command).
    Train(TrainArgs),
    /// Label the texts of a CSV file with a trained model.
    Predict(PredictArgs),
    /// Serve a trained model over HTTP (SageMaker endpoints and batch transform).
    Serve(ServeArgs),
    /// Rebuild report.html from the outputs of a finished job.
    Report(ReportArgs),
}

impl Cli {
    /// The command to run, `train` with defaults when none was given.
    pub fn into_command(self) -> Command {
        self.command
            .unwrap_or_else(|| Command::Train(TrainArgs::default()))
    }
}

/// `txcat train`.
#[derive(Debug, Clone, Default, Args)]
pub struct TrainArgs {
    /// Root of the SageMaker layout instead of /opt/ml (also: SAGEMAKER_BASE_DIR).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Override a hyperparameter (repeatable), e.g. --hp epochs=1.
    #[arg(long = "hp", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub hyperparameters: Vec<(String, String)>,
    /// Read a channel from a directory, a file or an s3:// URI (repeatable), e.g.
    /// --channel train=data/train.csv.
    #[arg(long = "channel", value_name = "NAME=LOCATION", value_parser = parse_channel)]
    pub channels: Vec<ChannelArg>,
    /// Read and validate configuration and every row, print a summary, and exit without training.
    #[arg(long)]
    pub dry_run: bool,
    /// Test hook: panic inside the job, to exercise the internal-error path.
    #[arg(long, hide = true)]
    pub test_panic: bool,
}

/// `txcat predict` (flags fixed by issue 4).
#[derive(Debug, Clone, Args)]
pub struct PredictArgs {
    /// Directory of a trained model (what training wrote to /opt/ml/model).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// CSV or JSON Lines file (`.jsonl`, `.ndjson`, `.json`; optionally `.gz`) with a text column.
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// File to write predictions to: the input's format, or CSV / JSON Lines by its extension.
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
    /// Name of the text column in the input.
    #[arg(long, default_value = "text")]
    pub text_column: String,
    /// How many labels (with probabilities) to write per row.
    #[arg(long, default_value_t = 1)]
    pub top_k: usize,
    /// Rows per forward pass.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// CSV input: field delimiter (`auto` sniffs it from the header line; `,` `;` `tab` `|`).
    #[arg(long, default_value = "auto")]
    pub csv_delimiter: CsvDelimiter,
    /// CSV input: text encoding (utf-8, utf-16, windows-1252, latin-1, auto).
    #[arg(long, default_value = "utf-8")]
    pub csv_encoding: CsvEncoding,
    /// Use the encoder alone even when the model directory holds a tf-idf blend
    /// (`txcat_blend.json`, kept by training when it scored better).
    #[arg(long)]
    pub encoder_only: bool,
}

/// `txcat serve` (SageMaker runs the image with `serve`). The other settings come from the
/// hosting environment: see [`crate::sagemaker::serve`].
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Directory of a trained model [default: /opt/ml/model, or SM_MODEL_DIR, or
    /// $SAGEMAKER_BASE_DIR/model].
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Port to listen on [default: SAGEMAKER_BIND_TO_PORT, else 8080]; 0 picks a free port
    /// (the log line "listening" names it).
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
    /// Address to listen on (all interfaces, as SageMaker requires).
    #[arg(long, value_name = "ADDR", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub host: IpAddr,
    /// Test hook: a batch holding exactly this text panics on the model thread.
    #[arg(long, hide = true, value_name = "TEXT")]
    pub test_panic_text: Option<String>,
}

/// `txcat report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// A job's output data folder (output/data, or output.tar.gz unpacked): holds metrics.json;
    /// report.html is written there.
    #[arg(long, value_name = "DIR")]
    pub output_dir: PathBuf,
}

/// A `--channel NAME=LOCATION` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelArg {
    pub name: String,
    /// A local path or an `s3://` URI.
    pub location: String,
}

fn parse_key_value(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.to_string()))
        }
        _ => Err(format!("`{arg}` is not KEY=VALUE")),
    }
}

fn parse_channel(arg: &str) -> Result<ChannelArg, String> {
    let (name, location) = parse_key_value(arg)?;
    if location.is_empty() {
        return Err(format!("`{arg}`: the location after `=` is empty"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(format!(
            "`{name}` is not a channel name (letters, digits, '.', '-', '_')"
        ));
    }
    Ok(ChannelArg { name, location })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("txcat").chain(args.iter().copied()))
            .map(Cli::into_command)
    }

    #[test]
    fn no_subcommand_is_train() {
        match parse(&[]).unwrap() {
            Command::Train(args) => {
                assert!(!args.dry_run);
                assert!(args.root.is_none());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn train_flags() {
        let Command::Train(args) = parse(&[
            "train",
            "--root",
            "/x",
            "--hp",
            "epochs=1",
            "--hp",
            "model_name=a=b",
            "--channel",
            "train=s3://b/k",
            "--dry-run",
        ])
        .unwrap() else {
            panic!("not train")
        };
        assert_eq!(args.root, Some(PathBuf::from("/x")));
        assert_eq!(
            args.hyperparameters,
            vec![
                ("epochs".into(), "1".into()),
                ("model_name".into(), "a=b".into())
            ]
        );
        assert_eq!(args.channels[0].location, "s3://b/k");
        assert!(args.dry_run);
        assert!(parse(&["train", "--hp", "novalue"]).is_err());
        assert!(parse(&["train", "--channel", "a/b=x"]).is_err());
    }

    #[test]
    fn serve_flags_and_defaults() {
        let Command::Serve(args) = parse(&["serve"]).unwrap() else {
            panic!("not serve")
        };
        assert!(args.model.is_none() && args.port.is_none());
        assert_eq!(args.host, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let Command::Serve(args) = parse(&[
            "serve",
            "--model",
            "/m",
            "--port",
            "0",
            "--host",
            "127.0.0.1",
        ])
        .unwrap() else {
            panic!("not serve")
        };
        assert_eq!(args.model, Some(PathBuf::from("/m")));
        assert_eq!(args.port, Some(0));
        assert_eq!(args.host, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(parse(&["serve", "--port", "70000"]).is_err());
    }
}
