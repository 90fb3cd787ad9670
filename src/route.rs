//! TEMPORARY stub: replaced by the real classifier.
#![allow(dead_code, unused)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteClass { SharePage, PublicApi, PublicTokenless, PublicBulk, ShareManage, FeedbackToken, Custom(usize), Other }
impl RouteClass {
    pub fn name(self) -> &'static str { match self { RouteClass::SharePage=>"share_page", RouteClass::PublicApi=>"public_api", RouteClass::PublicTokenless=>"public_tokenless", RouteClass::PublicBulk=>"public_bulk", RouteClass::ShareManage=>"share_manage", RouteClass::FeedbackToken=>"feedback_token", RouteClass::Custom(_)=>"custom", RouteClass::Other=>"other" } }
    pub fn is_public(self) -> bool { !matches!(self, RouteClass::ShareManage | RouteClass::Other) }
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostRule { NotAllowed, Read, GenerateQuery }
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route { pub class: RouteClass, pub path: String, pub query: Option<String>, pub tokens: Vec<String>, pub post: PostRule, pub method_param: bool, pub rule: String }
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile { LangSmith, Empty }
#[derive(Debug)]
pub struct RouteTable { base: String }
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError { #[error("dot segment in path")] DotSegment }
impl PathError { pub fn reason(&self) -> &'static str { "dot_segment" } }
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatternError { #[error("bad pattern")] Bad }
impl RouteTable {
    pub fn new(profile: Profile, base_path: &str, custom: &[Vec<String>]) -> Result<RouteTable, PatternError> { Ok(RouteTable{base: base_path.into()}) }
    pub fn classify(&self, method: &http::Method, pq: &str) -> Result<Route, PathError> {
        let (p, q) = match pq.split_once('?') { Some((p,q)) => (p, Some(q.to_string())), None => (pq, None) };
        if p.contains("..") { return Err(PathError::DotSegment) }
        let lp = p.to_ascii_lowercase();
        let seg: Vec<&str> = p.split('/').collect();
        let (class, post, tokens) = if lp.starts_with("/public/") { (RouteClass::SharePage, PostRule::NotAllowed, vec![seg[2].to_string()]) }
          else if lp.starts_with("/api/v1/public/") { (RouteClass::PublicApi, if lp.ends_with("/runs/query") || lp.ends_with("/delta/stream") {PostRule::Read} else {PostRule::NotAllowed}, vec![seg[4].to_string()]) }
          else if lp.ends_with("/share") || lp.ends_with("/workspaces/current/shared") { (RouteClass::ShareManage, PostRule::NotAllowed, vec![]) }
          else { (RouteClass::Other, PostRule::NotAllowed, vec![]) };
        Ok(Route{ class, path: p.to_string(), method_param: q.as_deref().map(|q| q.contains("_method")).unwrap_or(false), query: q, tokens, post, rule: String::new() })
    }
    pub fn entries(&self) -> Vec<(String, RouteClass, PostRule)> { vec![] }
}
