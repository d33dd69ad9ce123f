//! A small IAM policy evaluator for identity policies, enough to decide the requests of
//! `iam_requests` against the policies Terraform renders (`terraform/modules/spotpool/iam.tf`).
//!
//! It follows AWS's evaluation logic for one account and identity policies only: an explicit
//! Deny wins, then an Allow, else the request is implicitly denied. A statement applies when its
//! Action (or NotAction) matches the action (`*` and `?` wildcards, case-insensitive), its
//! Resource (or NotResource) matches the resource ARN (the same wildcards, case-sensitive) and
//! every condition holds: the values of one key are ORed, keys and operators are ANDed.
//!
//! Conditions, as AWS documents them: a key absent from the request makes a positive operator
//! false and a negated one (`StringNotEquals`, ...) true; `...IfExists` is true on an absent key;
//! `Null` tests presence only; `ForAllValues:` is true on an absent key and otherwise needs
//! every request value to match, `ForAnyValue:` is false on an absent key and otherwise needs
//! one. Condition key names are case-insensitive. A `${key}` policy variable in a condition value
//! takes the request's value; one the request lacks makes the statement not apply (AWS: "the
//! entire statement may be invalid").
//!
//! Must not: guess. An operator it does not implement (Numeric*, Date*, IpAddress, Binary*, ...)
//! or a policy element it does not know panics with its name, so a new operator in `iam.tf` is
//! never silently mis-evaluated.

use serde_json::Value;
use std::collections::BTreeMap;

/// A parsed policy document.
#[derive(Clone, Debug)]
pub struct Policy {
    pub statements: Vec<Statement>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// One statement. `sid` is the statement's Sid, or `#<index>` without one.
#[derive(Clone, Debug)]
pub struct Statement {
    pub sid: String,
    pub effect: Effect,
    /// The Action list, or the NotAction list when `not_action`.
    pub actions: Vec<String>,
    pub not_action: bool,
    pub resources: Vec<String>,
    pub not_resource: bool,
    pub conditions: Vec<Condition>,
}

/// One key under one operator, with its values (ORed).
#[derive(Clone, Debug)]
pub struct Condition {
    pub operator: String,
    pub key: String,
    pub values: Vec<String>,
}

/// What IAM decides for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by the statement with this Sid (the first that applies).
    Allowed(String),
    /// No statement applies.
    ImplicitDeny,
    /// Denied by the statement with this Sid.
    ExplicitDeny(String),
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed(_))
    }
}

/// The request context: condition keys (stored lowercase) with their values. A single-valued
/// key holds one value; `aws:TagKeys` holds the list. An empty list counts as absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context(BTreeMap<String, Vec<String>>);

impl Context {
    pub fn new() -> Context {
        Context::default()
    }

    /// Sets a single-valued key.
    pub fn with(mut self, key: &str, value: &str) -> Context {
        self.0.insert(key.to_lowercase(), vec![value.to_string()]);
        self
    }

    /// Sets a multivalued key.
    pub fn with_list<S: AsRef<str>>(mut self, key: &str, values: &[S]) -> Context {
        let values = values.iter().map(|v| v.as_ref().to_string()).collect();
        self.0.insert(key.to_lowercase(), values);
        self
    }

    pub fn without(mut self, key: &str) -> Context {
        self.0.remove(&key.to_lowercase());
        self
    }

    pub fn get(&self, key: &str) -> Option<&[String]> {
        self.0
            .get(&key.to_lowercase())
            .map(Vec::as_slice)
            .filter(|values| !values.is_empty())
    }
}

/// One authorization: an action on one resource ARN with its context.
#[derive(Clone, Debug)]
pub struct Request {
    pub action: String,
    pub resource: String,
    pub context: Context,
}

impl Request {
    pub fn new(action: &str, resource: &str, context: Context) -> Request {
        Request {
            action: action.to_string(),
            resource: resource.to_string(),
            context,
        }
    }
}

/// `Action`, `Resource` and condition values: a string or a list of strings.
fn strings(value: &Value, what: &str) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Bool(b) => vec![b.to_string()],
        Value::Array(list) => list.iter().flat_map(|v| strings(v, what)).collect(),
        other => panic!("unsupported {what}: {other}"),
    }
}

impl Policy {
    /// Parses a policy document; panics on anything it does not understand.
    pub fn parse(document: &Value) -> Policy {
        let list = match &document["Statement"] {
            Value::Array(list) => list.clone(),
            single @ Value::Object(_) => vec![single.clone()],
            other => panic!("a policy without a Statement list: {other}"),
        };
        let statements = list
            .iter()
            .enumerate()
            .map(|(index, s)| Statement::parse(index, s))
            .collect();
        Policy { statements }
    }

    /// The decision of these statements alone on `request`.
    pub fn evaluate(&self, request: &Request) -> Decision {
        let mut allowed = None;
        for statement in &self.statements {
            if !statement.applies(request) {
                continue;
            }
            match statement.effect {
                Effect::Deny => return Decision::ExplicitDeny(statement.sid.clone()),
                Effect::Allow => {
                    allowed.get_or_insert_with(|| statement.sid.clone());
                }
            }
        }
        allowed.map_or(Decision::ImplicitDeny, Decision::Allowed)
    }

    /// The policy without its Deny statements (what the Allow statements alone permit).
    pub fn allows_only(&self) -> Policy {
        Policy {
            statements: self
                .statements
                .iter()
                .filter(|s| s.effect == Effect::Allow)
                .cloned()
                .collect(),
        }
    }

    /// The policy with the condition on `key` under `operator` removed from statement `sid`.
    pub fn without_condition(&self, sid: &str, operator: &str, key: &str) -> Policy {
        let mut out = self.clone();
        let statement = out
            .statements
            .iter_mut()
            .find(|s| s.sid == sid)
            .unwrap_or_else(|| panic!("no statement {sid}"));
        let before = statement.conditions.len();
        statement
            .conditions
            .retain(|c| !(c.operator == operator && c.key == key));
        assert_eq!(
            statement.conditions.len() + 1,
            before,
            "{sid} has no {operator} on {key}"
        );
        out
    }
}

impl Statement {
    fn parse(index: usize, value: &Value) -> Statement {
        let object = value
            .as_object()
            .unwrap_or_else(|| panic!("a statement that is not an object: {value}"));
        for key in object.keys() {
            let known = [
                "Sid",
                "Effect",
                "Action",
                "NotAction",
                "Resource",
                "NotResource",
                "Condition",
            ];
            assert!(
                known.contains(&key.as_str()),
                "statement element {key} is not implemented by the evaluator: {value}"
            );
        }
        let sid = object
            .get("Sid")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map_or_else(|| format!("#{index}"), str::to_string);
        let effect = match object.get("Effect").and_then(Value::as_str) {
            Some("Allow") => Effect::Allow,
            Some("Deny") => Effect::Deny,
            other => panic!("statement {sid}: unsupported Effect {other:?}"),
        };
        let pick =
            |positive: &str, negative: &str| match (object.get(positive), object.get(negative)) {
                (Some(v), None) => (strings(v, positive), false),
                (None, Some(v)) => (strings(v, negative), true),
                _ => panic!("statement {sid} needs exactly one of {positive} and {negative}"),
            };
        let (actions, not_action) = pick("Action", "NotAction");
        let (resources, not_resource) = pick("Resource", "NotResource");
        for resource in &resources {
            assert!(
                !resource.contains("${"),
                "statement {sid}: policy variables in resources are not implemented: {resource}"
            );
        }
        let mut conditions = Vec::new();
        if let Some(block) = object.get("Condition") {
            let block = block
                .as_object()
                .unwrap_or_else(|| panic!("statement {sid}: Condition is not an object"));
            for (operator, keys) in block {
                // Refuse an operator before anything can use it.
                Operator::parse(operator);
                let keys = keys
                    .as_object()
                    .unwrap_or_else(|| panic!("statement {sid}: {operator} is not an object"));
                for (key, values) in keys {
                    conditions.push(Condition {
                        operator: operator.clone(),
                        key: key.clone(),
                        values: strings(values, "condition value"),
                    });
                }
            }
        }
        Statement {
            sid,
            effect,
            actions,
            not_action,
            resources,
            not_resource,
            conditions,
        }
    }

    fn applies(&self, request: &Request) -> bool {
        let action = self
            .actions
            .iter()
            .any(|pattern| wildcard_match(&pattern.to_lowercase(), &request.action.to_lowercase()));
        let resource = self
            .resources
            .iter()
            .any(|pattern| wildcard_match(pattern, &request.resource));
        action != self.not_action
            && resource != self.not_resource
            && self
                .conditions
                .iter()
                .all(|condition| condition.holds(&request.context) == Some(true))
    }
}

/// A condition operator: the set qualifier, the base operator and `IfExists`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Operator {
    set: Option<SetQualifier>,
    base: Base,
    if_exists: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SetQualifier {
    ForAllValues,
    ForAnyValue,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Base {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    ArnLike,
    ArnNotLike,
    Bool,
    Null,
}

impl Operator {
    /// Panics, naming the operator, on anything not implemented here.
    fn parse(name: &str) -> Operator {
        let (set, rest) = match name.split_once(':') {
            Some(("ForAllValues", rest)) => (Some(SetQualifier::ForAllValues), rest),
            Some(("ForAnyValue", rest)) => (Some(SetQualifier::ForAnyValue), rest),
            Some(_) => panic!("condition operator {name} is not implemented by the evaluator"),
            None => (None, name),
        };
        let (rest, if_exists) = match rest.strip_suffix("IfExists") {
            Some(base) => (base, true),
            None => (rest, false),
        };
        let base = match rest {
            "StringEquals" => Base::StringEquals,
            "StringNotEquals" => Base::StringNotEquals,
            "StringEqualsIgnoreCase" => Base::StringEqualsIgnoreCase,
            "StringNotEqualsIgnoreCase" => Base::StringNotEqualsIgnoreCase,
            "StringLike" => Base::StringLike,
            "StringNotLike" => Base::StringNotLike,
            // ArnEquals matches like ArnLike: both take wildcards in every ARN field.
            "ArnEquals" | "ArnLike" => Base::ArnLike,
            "ArnNotEquals" | "ArnNotLike" => Base::ArnNotLike,
            "Bool" => Base::Bool,
            "Null" if set.is_none() && !if_exists => Base::Null,
            _ => panic!("condition operator {name} is not implemented by the evaluator"),
        };
        Operator {
            set,
            base,
            if_exists,
        }
    }
}

impl Base {
    fn negated(self) -> bool {
        matches!(
            self,
            Base::StringNotEquals
                | Base::StringNotEqualsIgnoreCase
                | Base::StringNotLike
                | Base::ArnNotLike
        )
    }

    /// Whether one request value matches one policy value, before negation.
    fn matches(self, policy: &str, request: &str) -> bool {
        match self {
            Base::StringEquals | Base::StringNotEquals => policy == request,
            Base::StringEqualsIgnoreCase | Base::StringNotEqualsIgnoreCase => {
                policy.to_lowercase() == request.to_lowercase()
            }
            Base::StringLike | Base::StringNotLike | Base::ArnLike | Base::ArnNotLike => {
                wildcard_match(policy, request)
            }
            Base::Bool => policy.eq_ignore_ascii_case(request),
            Base::Null => unreachable!("Null compares presence, not values"),
        }
    }

    /// One request value against the policy values (ORed), negation applied.
    fn holds_for(self, policy: &[String], request: &str) -> bool {
        policy.iter().any(|p| self.matches(p, request)) != self.negated()
    }
}

impl Condition {
    /// Whether the condition holds; None when a policy variable cannot be resolved (the
    /// statement then does not apply).
    fn holds(&self, context: &Context) -> Option<bool> {
        let operator = Operator::parse(&self.operator);
        let values = self.resolved_values(context)?;
        let present = context.get(&self.key);
        if operator.base == Base::Null {
            let absent = present.is_none();
            return Some(values.iter().any(|v| match v.to_lowercase().as_str() {
                "true" => absent,
                "false" => !absent,
                other => panic!("Null on {} with value {other}", self.key),
            }));
        }
        Some(match (operator.set, present) {
            (Some(SetQualifier::ForAllValues), None) => true,
            (Some(SetQualifier::ForAnyValue), None) => false,
            (Some(SetQualifier::ForAllValues), Some(request)) => {
                request.iter().all(|r| operator.base.holds_for(&values, r))
            }
            (Some(SetQualifier::ForAnyValue), Some(request)) => {
                request.iter().any(|r| operator.base.holds_for(&values, r))
            }
            (None, None) => operator.if_exists || operator.base.negated(),
            (None, Some([single])) => operator.base.holds_for(&values, single),
            (None, Some(many)) => panic!(
                "{} on the multivalued key {} ({many:?}) needs ForAllValues: or ForAnyValue:",
                self.operator, self.key
            ),
        })
    }

    /// The condition's values with `${key}` policy variables replaced from the context.
    fn resolved_values(&self, context: &Context) -> Option<Vec<String>> {
        self.values
            .iter()
            .map(|value| {
                let mut out = String::new();
                let mut rest = value.as_str();
                while let Some(start) = rest.find("${") {
                    out.push_str(&rest[..start]);
                    let end = rest[start..]
                        .find('}')
                        .unwrap_or_else(|| panic!("unterminated policy variable in {value}"))
                        + start;
                    let key = &rest[start + 2..end];
                    assert!(
                        !key.contains(['*', '?', '$', ',', '\'']),
                        "policy variable {key} (special or with a default) is not implemented"
                    );
                    match context.get(key) {
                        Some([single]) => out.push_str(single),
                        Some(_) => panic!("policy variable {key} names a multivalued key"),
                        None => return None,
                    }
                    rest = &rest[end + 1..];
                }
                out.push_str(rest);
                Some(out)
            })
            .collect()
    }
}

/// IAM's wildcard match: `*` any run of characters (`/` and `:` included), `?` one character.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    // Iterative glob with backtracking to the last star.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(statements: Value) -> Policy {
        Policy::parse(&json!({ "Version": "2012-10-17", "Statement": statements }))
    }

    fn allow_with(condition: Value) -> Policy {
        policy(json!([{
            "Sid": "S", "Effect": "Allow", "Action": "ec2:CreateTags",
            "Resource": "*", "Condition": condition,
        }]))
    }

    fn decide(policy: &Policy, context: Context) -> bool {
        policy
            .evaluate(&Request::new(
                "ec2:CreateTags",
                "arn:aws:ec2:r:1:instance/i-1",
                context,
            ))
            .is_allowed()
    }

    #[test]
    fn iam_wildcards_match_any_run_or_one_character() {
        assert!(wildcard_match(
            "arn:aws:ec2:*:1:instance/*",
            "arn:aws:ec2:r:1:instance/i-1"
        ));
        assert!(wildcard_match("sp-?", "sp-a"));
        assert!(!wildcard_match("sp-?", "sp-ab"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("a*b*c", "aXXbYYbc"));
        assert!(!wildcard_match("a*b*c", "aXXbYY"));
        assert!(
            !wildcard_match("instance/*", "Instance/i-1"),
            "ARNs are case-sensitive"
        );
    }

    #[test]
    fn iam_explicit_deny_wins_over_allow_and_nothing_is_implicitly_denied() {
        let p = policy(json!([
            {"Sid": "A", "Effect": "Allow", "Action": "ec2:*", "Resource": "*"},
            {"Sid": "D", "Effect": "Deny", "Action": "ec2:TerminateInstances", "Resource": "arn:aws:ec2:r:1:instance/i-9"},
        ]));
        let request = |action: &str, id: &str| {
            Request::new(
                action,
                &format!("arn:aws:ec2:r:1:instance/{id}"),
                Context::new(),
            )
        };
        assert_eq!(
            p.evaluate(&request("ec2:TerminateInstances", "i-1")),
            Decision::Allowed("A".into())
        );
        assert_eq!(
            p.evaluate(&request("ec2:TerminateInstances", "i-9")),
            Decision::ExplicitDeny("D".into())
        );
        assert_eq!(
            p.evaluate(&request("ssm:SendCommand", "i-1")),
            Decision::ImplicitDeny
        );
        assert_eq!(
            p.allows_only()
                .evaluate(&request("ec2:TerminateInstances", "i-9")),
            Decision::Allowed("A".into())
        );
    }

    #[test]
    fn iam_actions_match_case_insensitively_and_not_action_and_not_resource_invert() {
        let p = policy(
            json!([{"Effect": "Allow", "Action": "EC2:createtags", "Resource": "arn:aws:ec2:r:1:instance/*"}]),
        );
        assert!(decide(&p, Context::new()));
        let upper = Request::new(
            "ec2:CreateTags",
            "arn:aws:ec2:r:1:INSTANCE/i-1",
            Context::new(),
        );
        assert!(
            !p.evaluate(&upper).is_allowed(),
            "resources are case-sensitive"
        );
        let not = policy(
            json!([{"Effect": "Allow", "NotAction": "ec2:Terminate*", "NotResource": "arn:aws:ec2:r:1:volume/*"}]),
        );
        assert!(decide(&not, Context::new()));
        assert!(
            !not.evaluate(&Request::new(
                "ec2:TerminateInstances",
                "arn:aws:ec2:r:1:instance/i-1",
                Context::new()
            ))
            .is_allowed()
        );
        assert!(
            !not.evaluate(&Request::new(
                "ec2:CreateTags",
                "arn:aws:ec2:r:1:volume/v-1",
                Context::new()
            ))
            .is_allowed()
        );
    }

    #[test]
    fn iam_string_equals_ors_values_ands_keys_and_is_false_on_an_absent_key() {
        let p = allow_with(
            json!({"StringEquals": {"aws:RequestTag/pool": ["a", "b"], "ec2:Region": "r"}}),
        );
        let both = Context::new()
            .with("aws:RequestTag/pool", "b")
            .with("ec2:region", "r");
        assert!(decide(&p, both.clone()));
        assert!(
            decide(&p, both.clone().with("AWS:REQUESTTAG/POOL", "a")),
            "key names are case-insensitive"
        );
        assert!(
            !decide(&p, both.clone().with("aws:RequestTag/pool", "A")),
            "values are case-sensitive"
        );
        assert!(
            !decide(&p, both.clone().without("ec2:Region")),
            "keys are ANDed; absent is false"
        );
        let ignore_case = allow_with(json!({"StringEqualsIgnoreCase": {"k": "ABC"}}));
        assert!(decide(&ignore_case, Context::new().with("k", "abc")));
    }

    #[test]
    fn iam_negated_operators_hold_on_an_absent_key_and_if_exists_too() {
        let not = allow_with(json!({"StringNotEquals": {"k": "x"}}));
        assert!(decide(&not, Context::new()));
        assert!(decide(&not, Context::new().with("k", "y")));
        assert!(!decide(&not, Context::new().with("k", "x")));
        let if_exists = allow_with(json!({"StringEqualsIfExists": {"k": "x"}}));
        assert!(decide(&if_exists, Context::new()));
        assert!(decide(&if_exists, Context::new().with("k", "x")));
        assert!(!decide(&if_exists, Context::new().with("k", "y")));
        let like =
            allow_with(json!({"StringLike": {"k": "sp-*"}, "StringNotLike": {"j": "*evil*"}}));
        assert!(decide(&like, Context::new().with("k", "sp-1")));
        assert!(!decide(
            &like,
            Context::new().with("k", "sp-1").with("j", "so evil")
        ));
        assert!(!decide(&like, Context::new()));
    }

    #[test]
    fn iam_arn_bool_and_null_operators() {
        let arn = allow_with(json!({"ArnLike": {"k": "arn:aws:ec2:*:1:launch-template/lt-1"}}));
        assert!(decide(
            &arn,
            Context::new().with("k", "arn:aws:ec2:r:1:launch-template/lt-1")
        ));
        assert!(!decide(
            &arn,
            Context::new().with("k", "arn:aws:ec2:r:1:launch-template/lt-2")
        ));
        let arn_equals = allow_with(json!({"ArnEquals": {"k": "arn:aws:iam::1:role/r"}}));
        assert!(decide(
            &arn_equals,
            Context::new().with("k", "arn:aws:iam::1:role/r")
        ));
        let not_arn = allow_with(json!({"ArnNotEquals": {"k": "arn:aws:iam::1:role/r"}}));
        assert!(decide(&not_arn, Context::new()));
        let bool_ = allow_with(json!({"Bool": {"ec2:Encrypted": "true"}}));
        assert!(decide(&bool_, Context::new().with("ec2:Encrypted", "True")));
        assert!(!decide(
            &bool_,
            Context::new().with("ec2:Encrypted", "false")
        ));
        assert!(!decide(&bool_, Context::new()));
        let must_lack = allow_with(json!({"Null": {"k": "true"}}));
        assert!(decide(&must_lack, Context::new()));
        assert!(!decide(&must_lack, Context::new().with("k", "v")));
        let must_have = allow_with(json!({"Null": {"k": "false"}}));
        assert!(decide(&must_have, Context::new().with("k", "v")));
        assert!(!decide(&must_have, Context::new()));
        assert!(
            !decide(&must_have, Context::new().with_list::<&str>("k", &[])),
            "an empty list is absent"
        );
    }

    #[test]
    fn iam_set_qualifiers_follow_aws_on_absent_and_present_keys() {
        let all =
            allow_with(json!({"ForAllValues:StringEquals": {"aws:TagKeys": ["Status", "UserId"]}}));
        assert!(
            decide(&all, Context::new()),
            "ForAllValues holds on an absent key"
        );
        assert!(decide(
            &all,
            Context::new().with_list("aws:TagKeys", &["UserId"])
        ));
        assert!(decide(
            &all,
            Context::new().with_list("aws:TagKeys", &["Status", "UserId"])
        ));
        assert!(!decide(
            &all,
            Context::new().with_list("aws:TagKeys", &["Status", "Owner"])
        ));
        let any = allow_with(json!({"ForAnyValue:StringLike": {"aws:TagKeys": "spotpool:*"}}));
        assert!(
            !decide(&any, Context::new()),
            "ForAnyValue fails on an absent key"
        );
        assert!(decide(
            &any,
            Context::new().with_list("aws:TagKeys", &["x", "spotpool:pool"])
        ));
        assert!(!decide(
            &any,
            Context::new().with_list("aws:TagKeys", &["x"])
        ));
        let none_of = allow_with(json!({"ForAllValues:StringNotEquals": {"aws:TagKeys": "Owner"}}));
        assert!(decide(
            &none_of,
            Context::new().with_list("aws:TagKeys", &["a", "b"])
        ));
        assert!(!decide(
            &none_of,
            Context::new().with_list("aws:TagKeys", &["a", "Owner"])
        ));
    }

    #[test]
    fn iam_policy_variables_take_the_request_value_and_an_unresolved_one_voids_the_statement() {
        let p = policy(json!([
            {"Sid": "Own", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*",
             "Condition": {"StringEquals": {"secretsmanager:ResourceTag/InstanceArn": "${ec2:SourceInstanceARN}"}}},
            {"Sid": "Others", "Effect": "Deny", "Action": "secretsmanager:GetSecretValue", "Resource": "*",
             "Condition": {"StringNotEquals": {"secretsmanager:ResourceTag/InstanceArn": "${ec2:SourceInstanceARN}"}}},
        ]));
        let read = |context: Context| {
            p.evaluate(&Request::new(
                "secretsmanager:GetSecretValue",
                "arn:s",
                context,
            ))
        };
        let mine = Context::new().with("ec2:SourceInstanceARN", "arn:i-1");
        assert_eq!(
            read(
                mine.clone()
                    .with("secretsmanager:ResourceTag/InstanceArn", "arn:i-1")
            ),
            Decision::Allowed("Own".into())
        );
        assert_eq!(
            read(
                mine.clone()
                    .with("secretsmanager:ResourceTag/InstanceArn", "arn:i-2")
            ),
            Decision::ExplicitDeny("Others".into())
        );
        assert_eq!(
            read(mine),
            Decision::ExplicitDeny("Others".into()),
            "an untagged secret"
        );
        assert_eq!(
            read(Context::new().with("secretsmanager:ResourceTag/InstanceArn", "arn:i-1")),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn iam_removing_a_condition_widens_the_statement() {
        let p = allow_with(json!({"StringEquals": {"a": "1", "b": "2"}}));
        let only_a = Context::new().with("a", "1");
        assert!(!decide(&p, only_a.clone()));
        assert!(decide(
            &p.without_condition("S", "StringEquals", "b"),
            only_a
        ));
    }

    #[test]
    #[should_panic(expected = "NumericLessThan is not implemented")]
    fn iam_an_unimplemented_operator_is_refused_by_name() {
        allow_with(json!({"NumericLessThan": {"k": "1"}}));
    }

    #[test]
    #[should_panic(expected = "ForAllValues:Null is not implemented")]
    fn iam_a_set_qualified_null_is_refused() {
        allow_with(json!({"ForAllValues:Null": {"k": "true"}}));
    }

    #[test]
    #[should_panic(expected = "needs ForAllValues: or ForAnyValue:")]
    fn iam_a_plain_operator_on_a_multivalued_key_is_refused() {
        let p = allow_with(json!({"StringEquals": {"aws:TagKeys": "a"}}));
        decide(&p, Context::new().with_list("aws:TagKeys", &["a", "b"]));
    }

    #[test]
    #[should_panic(expected = "Principal is not implemented")]
    fn iam_an_unknown_statement_element_is_refused() {
        policy(json!([{"Effect": "Allow", "Action": "*", "Resource": "*", "Principal": "*"}]));
    }
}
