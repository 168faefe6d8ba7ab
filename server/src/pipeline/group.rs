//! Council and benchmark: every member's decision recorded at once, every
//! member asked in parallel, and for a council the moderator's final answer
//! and analysis.

use super::*;

/// A group query: what every member is asked, and the text the moderator
/// reads as the question.
pub struct GroupQuery<'a> {
    /// `council` or `benchmark`.
    pub mode: Mode,
    /// The query as routed and recorded (the last user message).
    pub query: &'a str,
    /// What each member is sent.
    pub body: Body,
    /// `max_tokens` for the moderator, when the client set one.
    pub max_tokens: Option<u64>,
    /// What the caller's virtual key was granted.
    pub grant: Option<&'a Grant>,
}

/// A group query's outcome: the answer, and every decision recorded for it
/// (members first, then a council's moderator).
pub struct GroupOutcome {
    /// As `/api/query` answers it.
    pub answer: GroupAnswer,
    /// Tokens of every call together.
    pub usage: Option<Usage>,
}

/// Runs a council or benchmark query: records one decision per member
/// (mode, score and signals of the query, one `groupId`), asks every member
/// at once, and for a council has the moderator read the answers and write
/// the final one (its decision, with the analysis, recorded when it is
/// done). Fails only on input that cannot be recorded; a failing member is
/// in the answer (`error`) and in its tier's counts.
pub async fn run_group(state: &AppState, q: GroupQuery<'_>) -> Result<GroupOutcome, ApiError> {
    let route = routing::route(
        q.query,
        q.mode,
        state.service.q4_threshold(),
        state.options.scorer,
    );
    let tiers: Vec<Tier> = match q.mode {
        Mode::Council => state.options.council.clone(),
        _ => Tier::ALL.to_vec(),
    };
    let group_id = new_group_id();
    let mut drafts = Vec::with_capacity(tiers.len());
    for &tier in &tiers {
        let draft = state
            .service
            .draft(new_decision(q.query, tier, &route, q.mode, q.grant))
            .map_err(|e| ApiError::Invalid(e.to_string()))?;
        drafts.push(draft.in_group(&group_id, None));
    }
    let (decisions, pending) = state.service.record_batch(drafts);
    let committing = pending.commit();
    tracing::info!(group = %group_id, mode = q.mode.name(), members = tiers.len(), "group routed");
    let calls = decisions
        .into_iter()
        .map(|decision| member(state, decision, q.body.clone()));
    let members: Vec<MemberAnswer> = futures_util::future::join_all(calls).await;
    let mut answer = GroupAnswer {
        mode: q.mode,
        group_id: group_id.clone(),
        answer: None,
        model: None,
        members,
        moderator: None,
        analysis: None,
    };
    if q.mode == Mode::Council {
        moderate(state, &q, &route, &mut answer).await;
    }
    if let Some(committing) = committing {
        // As for one query: a failing store keeps the decisions in memory.
        let _ = committing.await;
    }
    let usage = answer
        .members
        .iter()
        .chain(&answer.moderator)
        .filter_map(|m| m.usage)
        .reduce(|a, b| Usage {
            prompt_tokens: a.prompt_tokens + b.prompt_tokens,
            completion_tokens: a.completion_tokens + b.completion_tokens,
        });
    let members: Vec<(Tier, Usage)> = answer
        .members
        .iter()
        .filter_map(|m| Some((m.tier, m.usage?)))
        .collect();
    if let Some(one) = shared::insight::group_baseline(&members) {
        state.service.add_baseline(one);
    }
    Ok(GroupOutcome { answer, usage })
}

/// One member's call, whatever its outcome.
async fn member(state: &AppState, mut decision: RoutingDecision, body: Body) -> MemberAnswer {
    let started = Instant::now();
    // A group's member is never sampled for shadow judging: no question.
    let result = answer(state, &mut decision, body, "").await;
    let latency_ms = started.elapsed().as_secs_f64() * 1e3;
    match result {
        Ok((answer, _)) => MemberAnswer {
            tier: decision.tier,
            usage: decision.usage,
            decision,
            answer: Some(answer.content.or(answer.refusal).unwrap_or_default()),
            model: answer.model,
            latency_ms,
            error: None,
            error_status: None,
            finish_reason: answer.finish_reason,
            tool_calls: answer.tool_calls,
        },
        Err(err) => MemberAnswer {
            tier: decision.tier,
            decision,
            answer: None,
            model: None,
            latency_ms,
            usage: None,
            error_status: Some(err.status().as_u16()),
            error: Some(err.to_string()),
            finish_reason: None,
            tool_calls: None,
        },
    }
}

/// The moderator's turn: reads the members' answers, writes the final one;
/// its decision is recorded with the analysis. Without any member answer
/// there is nothing to moderate and no call is made.
async fn moderate(
    state: &AppState,
    q: &GroupQuery<'_>,
    route: &routing::Route,
    group: &mut GroupAnswer,
) {
    let answered = group.members.iter().filter(|m| m.ok()).count() as u32;
    let failed = group.members.len() as u32 - answered;
    if answered == 0 {
        return;
    }
    let tier = state.options.moderator;
    let prompt = moderator_prompt(q.query, &group.members);
    let started = Instant::now();
    // The call runs first and the decision is recorded with its analysis;
    // the tier counts it as active while it runs, like any call.
    let Ok(probe) = RoutingDecision::new(
        String::new(),
        q.query,
        tier,
        route.score,
        chrono::Utc::now(),
    ) else {
        return;
    };
    let result = call(state, &probe, query_body(&prompt, q.max_tokens)).await;
    let moderation_ms = started.elapsed().as_secs_f64() * 1e3;
    let (text, model, usage, error) = match result {
        Ok((answer, _)) => (
            answer.content.or(answer.refusal),
            answer.model,
            answer.usage,
            None,
        ),
        Err(err) => (None, None, None, Some(err)),
    };
    let (stated, synthesis) = stated_agreement(text.as_deref().unwrap_or_default());
    let answers: Vec<(Tier, Option<&str>)> = group
        .members
        .iter()
        .map(|m| (m.tier, m.answer.as_deref()))
        .collect();
    let (agreed_with, basis, similarity) = match error {
        None => agreement(&synthesis, stated, &answers),
        Some(_) => (None, "similarity", None),
    };
    let analysis = CouncilAnalysis {
        agreed_with,
        basis: basis.to_owned(),
        similarity,
        moderation_ms,
        members_answered: answered,
        members_failed: failed,
    };
    let recorded = state
        .service
        .draft(new_decision(q.query, tier, route, Mode::Council, q.grant))
        .map(|d| d.in_group(&group.group_id, Some(analysis.clone())));
    let Ok(draft) = recorded else {
        return;
    };
    let (mut decisions, pending) = state.service.record_batch(vec![draft]);
    if let Some(committing) = pending.commit() {
        let _ = committing.await;
    }
    let mut decision = decisions.pop().expect("one recorded");
    if let Some(charged) = add_usage(state, &mut decision, usage) {
        let _ = charged.await;
    }
    let usage = decision.usage;
    let failed_status = error.as_ref().map(|e| e.status().as_u16());
    group.moderator = Some(MemberAnswer {
        tier,
        decision,
        answer: error.is_none().then(|| synthesis.clone()),
        model: model.clone(),
        latency_ms: moderation_ms,
        usage,
        error_status: failed_status,
        error: error.map(|e| e.to_string()),
        finish_reason: None,
        tool_calls: None,
    });
    if group.moderator.as_ref().is_some_and(MemberAnswer::ok) {
        group.answer = Some(synthesis);
        group.model = model;
    }
    group.analysis = Some(analysis);
}

/// What the moderator is asked: the question, each answered member's
/// answer under its tier's label, and the rule for its last line.
pub fn moderator_prompt(query: &str, members: &[MemberAnswer]) -> String {
    let mut prompt = String::from(
        "You moderate a council of language models. Read the question and the members' \
         answers, then write the best final answer to the question yourself. After it, \
         on a line of its own, write AGREED: followed by the label of the member whose \
         answer is closest to yours (or AGREED: none).\n\nQuestion:\n",
    );
    prompt.push_str(query);
    for m in members.iter().filter(|m| m.ok()) {
        prompt.push_str(&format!(
            "\n\nAnswer of member {} ({}):\n{}",
            m.tier,
            m.tier.internal_name(),
            m.answer.as_deref().unwrap_or_default()
        ));
    }
    prompt
}

/// A group id unique across instances and restarts: the time in ms and
/// 32 random bits, in hex.
fn new_group_id() -> String {
    let ms = chrono::Utc::now().timestamp_millis();
    format!("g-{ms:x}-{:08x}", fastrand::u32(..))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(tier: Tier, answer: Option<&str>) -> MemberAnswer {
        let decision =
            RoutingDecision::new("i-1".into(), "q", tier, 1.0, chrono::Utc::now()).unwrap();
        MemberAnswer {
            tier,
            decision,
            answer: answer.map(str::to_owned),
            model: None,
            latency_ms: 1.0,
            usage: None,
            error: answer.is_none().then(|| "failed".to_owned()),
            error_status: answer.is_none().then_some(502),
            finish_reason: None,
            tool_calls: None,
        }
    }

    #[test]
    fn a_query_body_is_one_user_message_and_its_limit() {
        let body = query_body("What is Rust?", Some(64));
        assert_eq!(
            Value::Object(body),
            json!({"messages": [{"role": "user", "content": "What is Rust?"}], "max_tokens": 64})
        );
        assert!(!query_body("x", None).contains_key("max_tokens"));
    }

    #[test]
    fn the_moderator_reads_the_question_and_only_the_answers_that_came() {
        let members = [
            answered(Tier::Q2, Some("a cat")),
            answered(Tier::Q3, None),
            answered(Tier::Q4, Some("a small cat")),
        ];
        let prompt = moderator_prompt("What purrs?", &members);
        assert!(prompt.contains("Question:\nWhat purrs?"));
        assert!(prompt.contains("Answer of member Q2 (fast):\na cat"));
        assert!(prompt.contains("Answer of member Q4 (powerful):\na small cat"));
        assert!(!prompt.contains("member Q3"), "{prompt}");
        assert!(prompt.contains("AGREED:"), "it asks for the verdict line");
    }

    #[test]
    fn group_ids_are_unique_and_name_their_time() {
        let ids: std::collections::HashSet<String> = (0..1_000).map(|_| new_group_id()).collect();
        assert_eq!(ids.len(), 1_000);
        let id = ids.iter().next().unwrap();
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(parts[0], "g");
        let ms = i64::from_str_radix(parts[1], 16).unwrap();
        assert!((chrono::Utc::now().timestamp_millis() - ms).abs() < 60_000);
        assert_eq!(parts[2].len(), 8);
    }
}
