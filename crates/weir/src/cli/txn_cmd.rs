//! Transactions from the command line: `weir produce TOPIC --transaction` (one message in a
//! transaction, decided as `--decide` says) and `weir txn answer`, a member of a producer group
//! that answers the broker's check-backs until stopped.
//!
//! Both print one JSON object per line on stdout, so scripts and tests can follow them:
//!
//! ```text
//! {"event":"half","transaction_id":T,"half_id":ID,"topic":..,"queue":Q}        half stored
//! {"event":"commit","transaction_id":T,"id":ID,"topic":..,"queue":Q,"offset":N} committed
//! {"event":"rollback","transaction_id":T}                                       rolled back
//! {"event":"unknown","transaction_id":T}                         left to the check-back
//! {"event":"check","answer":A,"transaction_id":T, ...message fields}    a check answered
//! ```

use std::io::Write;

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use weir_client::transaction::TxOutcome;
use weir_client::{
    Compression, Message, ProducerConfig, ReceivedMessage, TransactionProducer, TxState,
};
use weir_proto::transaction::PROP_TRANSACTION_ID;

use super::ServerArgs;
use super::output::message_json;

/// How `weir produce --transaction` ends its transaction (its "local transaction").
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Decide {
    /// Commit: the message becomes visible.
    Commit,
    /// Roll back: the message is never visible.
    Rollback,
    /// Decide nothing and exit: the broker checks back with the producer group.
    Unknown,
    /// Decide nothing and stay connected (a member of the group that answers its own
    /// check-backs "unknown") until killed or Ctrl-C: a producer that dies mid-transaction.
    Never,
}

/// Producer-group tools for transactional messages.
#[derive(Debug, Args)]
pub struct TxnArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: TxnCommand,
}

#[derive(Debug, Subcommand)]
enum TxnCommand {
    /// Join a producer group and answer the broker's check-backs of its undecided
    /// transactions, all with one answer, until Ctrl-C; one JSON line per check answered.
    Answer {
        /// The producer group.
        #[arg(long, short = 'g')]
        group: String,
        /// A topic whose transactions to answer for (registers with the brokers serving it);
        /// repeatable.
        #[arg(long, short = 't', required = true)]
        topic: Vec<String>,
        /// The answer to every check.
        #[arg(long, value_enum)]
        state: Answer,
    },
}

/// What `weir txn answer` says to each check-back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Answer {
    /// Commit the transaction.
    Commit,
    /// Roll it back.
    Rollback,
    /// Not known: the broker asks again later, and rolls back after its last check.
    Unknown,
}

impl Answer {
    fn state(self) -> TxState {
        match self {
            Answer::Commit => TxState::Commit,
            Answer::Rollback => TxState::Rollback,
            Answer::Unknown => TxState::Unknown,
        }
    }
}

/// The name of a transaction state in the JSON lines.
fn state_name(state: TxState) -> &'static str {
    match state {
        TxState::Commit => "commit",
        TxState::Rollback => "rollback",
        TxState::Unknown => "unknown",
    }
}

/// Prints `line` as one JSON line and flushes it, so a reader sees it at once.
fn print_line(line: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Runs a `weir txn` command.
pub async fn run(args: TxnArgs) -> Result<()> {
    match args.command {
        TxnCommand::Answer {
            group,
            topic,
            state,
        } => answer(args.server.servers(), group, &topic, state).await,
    }
}

/// Answers every check-back of `group` on the brokers of `topics` with `answer`, until Ctrl-C.
async fn answer(
    servers: Vec<String>,
    group: String,
    topics: &[String],
    answer: Answer,
) -> Result<()> {
    let checker = move |message: &ReceivedMessage| {
        let mut line = message_json(message);
        line["event"] = json!("check");
        line["answer"] = json!(state_name(answer.state()));
        line["transaction_id"] = json!(message.property(PROP_TRANSACTION_ID));
        print_line(&line);
        answer.state()
    };
    let producer =
        TransactionProducer::new(ProducerConfig::new(servers), group.clone(), checker).await?;
    for topic in topics {
        // A broker not reachable now is registered with again every few seconds.
        if let Err(e) = producer.register_for_topic(topic).await {
            eprintln!("warning: registering for {topic} failed for now: {e}");
        }
    }
    eprintln!(
        "answering check-backs of producer group {group} with {} (Ctrl-C to stop)",
        state_name(answer.state())
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}

/// Sends `message` in a transaction of `group` and decides it as `decide` says, printing the
/// half message and the decision as JSON lines.
pub async fn produce(
    servers: Vec<String>,
    group: String,
    message: Message,
    decide: Decide,
    compression: Compression,
) -> Result<()> {
    // This process never learns more than --decide says: its own check-backs stay unknown.
    let config = ProducerConfig::new(servers).with_compression(compression);
    let producer = TransactionProducer::new(config, group, |_| TxState::Unknown).await?;
    let outcome = producer
        .send_in_transaction(message, |_| TxState::Unknown)
        .await?;
    print_line(&json!({
        "event": "half",
        "transaction_id": outcome.transaction_id,
        "half_id": outcome.half.message_id.to_string(),
        "topic": outcome.half.topic,
        "queue": outcome.half.queue_id,
    }));
    let state = match decide {
        Decide::Commit => TxState::Commit,
        Decide::Rollback => TxState::Rollback,
        Decide::Unknown => TxState::Unknown,
        Decide::Never => {
            tokio::signal::ctrl_c().await?;
            return Ok(());
        }
    };
    let committed = producer.end_transaction(&outcome, state).await?;
    print_line(&decision_line(&outcome, state, committed.as_ref()));
    Ok(())
}

/// The JSON line saying how the transaction of `outcome` was decided.
fn decision_line(
    outcome: &TxOutcome,
    state: TxState,
    committed: Option<&weir_client::SendResult>,
) -> Value {
    let mut line = json!({
        "event": state_name(state),
        "transaction_id": outcome.transaction_id,
    });
    if let Some(stored) = committed {
        line["id"] = json!(stored.message_id.to_string());
        line["topic"] = json!(stored.topic);
        line["queue"] = json!(stored.queue_id);
        line["offset"] = json!(stored.queue_offset);
    }
    line
}
