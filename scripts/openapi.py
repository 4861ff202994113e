#!/usr/bin/env python3
"""Writes crates/adtally-server/src/openapi.json, the OpenAPI 3.1 document the server
serves at /openapi.json. Edit the tables here, run this, commit both.
A test in the server crate checks that every route of the router is described."""
import json
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "crates/adtally-server/src/openapi.json"

METRIC_NOTES = {
    "reach": {"description": "distinct users with a valid impression: exact up to 2048, a HyperLogLog estimate (about 0.8% standard error) above"},
    "frequency": {"description": "impressions / reach; null when reach is 0"},
}

def ref(name):
    return {"$ref": f"#/components/schemas/{name}"}

ID = {"type": "integer", "format": "int64"}
MICROS = {"type": "integer", "format": "int64", "description": "integer micros of the account currency"}
TIME = {"type": "string", "format": "date-time"}
NULL_OR = lambda s: {"oneOf": [s, {"type": "null"}]}

ATTRIBUTION_SETTINGS = {"type": "object", "additionalProperties": False, "properties": {
    "click_window_days": {"type": "integer", "minimum": 1, "maximum": 90, "description": "default 30"},
    "view_window_days": {"type": "integer", "minimum": 0, "maximum": 30, "description": "default 1; 0 turns view-through off; at most click_window_days"},
    "half_life_days": {"type": "integer", "minimum": 1, "maximum": 90, "description": "time_decay half-life, default 7"}}}

schemas = {
    "AttributionSettings": ATTRIBUTION_SETTINGS,
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"],
              "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
    "Advertiser": {"type": "object", "properties": {"id": ID, "name": {"type": "string"}, "email": {"type": "string"},
                   "timezone": {"type": "string"}, "max_conversion_value_micros": MICROS,
                   "attribution": ref("AttributionSettings"),
                   "balance_micros": MICROS, "created_at": TIME}},
    "NewAdvertiser": {"type": "object", "required": ["name", "email"], "additionalProperties": False,
                      "properties": {"name": {"type": "string", "maxLength": 200}, "email": {"type": "string", "maxLength": 254},
                                     "timezone": {"type": "string", "description": "IANA zone, default UTC"},
                                     "max_conversion_value_micros": {**MICROS, "description": "cap on an anonymous pixel's value, default 1000000000"},
                                     "attribution": ref("AttributionSettings")}},
    "AdvertiserPatch": {"type": "object", "additionalProperties": False,
                        "properties": {"name": {"type": "string", "maxLength": 200}, "email": {"type": "string", "maxLength": 254},
                                       "timezone": {"type": "string"}, "max_conversion_value_micros": MICROS,
                                       "attribution": ref("AttributionSettings")}},
    "MePatch": {"type": "object", "required": ["attribution"], "additionalProperties": False,
                "properties": {"attribution": ref("AttributionSettings")}},
    "ApiKey": {"type": "object", "properties": {"id": ID, "advertiser_id": ID, "created_at": TIME,
               "last_used_at": NULL_OR(TIME), "revoked_at": NULL_OR(TIME)}},
    "NewApiKey": {"type": "object", "properties": {"id": ID, "api_key": {"type": "string", "description": "shown once"}, "advertiser_id": ID}},
    "NewCredit": {"type": "object", "required": ["amount_micros", "kind"], "additionalProperties": False,
                  "properties": {"amount_micros": MICROS, "kind": {"enum": ["topup", "bonus", "promo"]}, "note": {"type": "string", "maxLength": 500}}},
    "LedgerEntry": {"type": "object", "properties": {"id": NULL_OR(ID), "at": TIME, "kind": {"enum": ["topup", "bonus", "promo", "spend"]},
                    "amount_micros": MICROS, "note": NULL_OR({"type": "string"})}},
    "Ledger": {"type": "object", "properties": {"advertiser_id": ID, "balance_micros": MICROS, "items": {"type": "array", "items": ref("LedgerEntry")}}},
    "Placement": {"type": "object", "required": ["id", "name", "format"], "properties": {"id": {"type": "string", "pattern": "^[a-z0-9_-]{1,64}$"},
                  "name": {"type": "string"}, "format": {"enum": ["compact", "sidebar", "video"]}, "floor_cpm_micros": MICROS}},
    "Targeting": {"type": "object", "properties": {"devices": {"type": "array", "items": {"enum": ["desktop", "mobile", "tablet"]}},
                  "placements": {"type": "array", "items": {"type": "string"}}}},
    "FrequencyCap": {"type": "object", "required": ["impressions", "per_hours"], "properties": {"impressions": {"type": "integer", "minimum": 1, "maximum": 1000},
                     "per_hours": {"type": "integer", "minimum": 1, "maximum": 168}}},
    "CampaignInput": {"type": "object", "additionalProperties": False, "properties": {
        "advertiser_id": {**ID, "description": "admin only"}, "name": {"type": "string", "maxLength": 200},
        "cpm_bid_micros": {**MICROS, "minimum": 10000}, "total_budget_micros": MICROS, "daily_budget_micros": NULL_OR(MICROS),
        "start_at": NULL_OR(TIME), "end_at": NULL_OR(TIME), "pacing": {"enum": ["even", "asap"]},
        "targeting": ref("Targeting"), "frequency_cap": NULL_OR(ref("FrequencyCap"))}},
    "Campaign": {"type": "object", "properties": {"id": ID, "advertiser_id": ID, "name": {"type": "string"},
        "status": {"enum": ["draft", "pending_review", "active", "paused", "archived", "completed"]},
        "cpm_bid_micros": MICROS, "total_budget_micros": MICROS, "daily_budget_micros": NULL_OR(MICROS), "start_at": NULL_OR(TIME),
        "end_at": NULL_OR(TIME), "pacing": {"enum": ["even", "asap"]}, "targeting": ref("Targeting"),
        "frequency_cap": NULL_OR(ref("FrequencyCap")), "spend_micros": MICROS, "created_at": TIME}},
    "AdInput": {"type": "object", "additionalProperties": False, "properties": {"format": {"enum": ["compact", "sidebar", "video"]},
        "headline": {"type": "string", "maxLength": 90}, "body": {"type": "string", "maxLength": 300}, "image_url": NULL_OR({"type": "string", "format": "uri"}), "video_url": NULL_OR({"type": "string", "format": "uri", "description": "https .mp4 or .webm; required for format video"}),
        "cta": {"type": "string", "maxLength": 30}, "target_url": {"type": "string", "format": "uri", "description": "http or https"}}},
    "Ad": {"type": "object", "properties": {"id": ID, "campaign_id": ID, "advertiser_id": ID, "format": {"enum": ["compact", "sidebar", "video"]},
        "headline": {"type": "string"}, "body": {"type": "string"}, "image_url": NULL_OR({"type": "string"}), "video_url": NULL_OR({"type": "string"}), "cta": {"type": "string"},
        "target_url": {"type": "string"}, "status": {"enum": ["pending_review", "approved", "rejected"]},
        "rejection_reason": NULL_OR({"type": "string"}), "created_at": TIME,
        "version": {"type": "integer", "description": "version of the content that serves; a decision's click goes to the target URL of the version it served"},
        "revision": NULL_OR({"type": "object", "description": "an edit of an approved ad, in review or rejected; the approved content keeps serving until it is approved",
            "properties": {"version": {"type": "integer"}, "status": {"enum": ["pending_review", "rejected"]}, "rejection_reason": NULL_OR({"type": "string"}),
                           "created_at": TIME, "format": {"enum": ["compact", "sidebar", "video"]}, "headline": {"type": "string"}, "body": {"type": "string"},
                           "image_url": NULL_OR({"type": "string"}), "video_url": NULL_OR({"type": "string"}), "cta": {"type": "string"}, "target_url": {"type": "string"}}})}},
    "Review": {"type": "object", "required": ["decision"], "additionalProperties": False,
               "properties": {"decision": {"enum": ["approve", "reject"]}, "reason": {"type": "string", "maxLength": 500}}},
    "Decision": {"type": "object", "properties": {"request_id": {"type": "string"}, "ad": {"type": "object", "properties": {
        "id": ID, "campaign_id": ID, "format": {"type": "string"}, "headline": {"type": "string"}, "body": {"type": "string"},
        "image_url": NULL_OR({"type": "string"}), "video_url": NULL_OR({"type": "string"}), "cta": {"type": "string"}}},
        "impression_url": {"type": "string"}, "viewable_url": {"type": "string"}, "click_url": {"type": "string"}}},
    "Conversion": {"type": "object", "additionalProperties": False, "description": "give exactly one of uid and click_id",
        "properties": {"uid": {"type": "string", "maxLength": 128},
        "click_id": {"type": "string", "description": "the adtally_click parameter the click redirect added to the landing page's URL"},
        "value_micros": MICROS, "order_id": {"type": "string", "maxLength": 128}, "advertiser_id": {**ID, "description": "admin only"}}},
    "ImportResult": {"type": "object", "properties": {"accepted": {"type": "integer"}, "duplicates": {"type": "integer"},
        "rejected_count": {"type": "integer"}, "rejected": {"type": "array", "items": {"type": "object", "properties": {"line": {"type": "integer"}, "error": {"type": "string"}}}},
        "verdicts": {"type": "object", "additionalProperties": {"type": "integer"}}}},
    "Metrics": {"type": "object", "properties": {name: ({"type": ["number", "null"]} if name in ("ctr", "viewability_rate", "conversion_rate", "roas", "frequency")
        else {"type": ["integer", "null"]} if name in ("cpm_micros", "cpc_micros", "cpa_micros") else {"type": "integer"})
        | METRIC_NOTES.get(name, {})
        for name in ["impressions", "viewable_impressions", "clicks", "conversions", "ctr", "viewability_rate", "spend_micros", "cpm_micros",
                     "cpc_micros", "conversion_rate", "cpa_micros", "revenue_micros", "roas", "invalid_impressions", "invalid_clicks",
                     "reach", "frequency"]}},
    "Report": {"type": "object", "properties": {"rows": {"type": "array", "items": {"allOf": [ref("Metrics"), {"type": "object", "properties": {
        "date": {"type": "string", "format": "date"}, "hour": TIME, "campaign_id": NULL_OR(ID), "ad_id": NULL_OR(ID), "placement": NULL_OR({"type": "string"}),
        "device": {"type": "string"}, "country": {"type": "string"}}}]}}, "totals": ref("Metrics"), "timezone": {"type": "string"}}},
    "IvtReport": {"type": "object", "properties": {"rows": {"type": "array", "items": {"type": "object", "properties": {
        "event_type": {"type": "string"}, "reason": {"type": "string"}, "events": {"type": "integer"}}}},
        "totals": {"type": "object", "properties": {"invalid_impressions": {"type": "integer"}, "invalid_clicks": {"type": "integer"},
                   "by_reason": {"type": "object", "additionalProperties": {"type": "object", "additionalProperties": {"type": "integer"}}}}}}},
    "NewPromo": {"type": "object", "required": ["code", "amount_micros"], "additionalProperties": False, "properties": {
        "code": {"type": "string", "pattern": "^[A-Za-z0-9_-]{3,64}$"}, "amount_micros": MICROS, "expires_at": TIME, "max_redemptions": {"type": "integer", "minimum": 1}}},
    "Redeem": {"type": "object", "required": ["code"], "additionalProperties": False, "properties": {"code": {"type": "string"}}},
    "SignIn": {"type": "object", "required": ["api_key"], "additionalProperties": False,
               "properties": {"api_key": {"type": "string", "maxLength": 200}}},
    "Session": {"type": "object", "required": ["role", "csrf_token"], "properties": {"role": {"enum": ["admin", "advertiser"]},
                "advertiser_id": {**ID, "description": "advertiser sessions only"}, "csrf_token": {"type": "string",
                "description": "send as X-CSRF-Token with every POST, PATCH, PUT or DELETE authenticated by the cookie"},
                "expires_at": TIME}},
    "AuditEntry": {"type": "object", "properties": {"at": TIME, "actor": {"type": "string"}, "action": {"type": "string"}, "target": {"type": "string"}, "detail": {}}},
}

# Attribution and insights.
ATTRIBUTION_MODEL = {"type": "object", "properties": {
    "rows": {"type": "array", "items": {"type": "object", "properties": {
        "campaign_id": ID, "ad_id": ID, "conversions": {"type": "number", "description": "fractional credit (exact millionths)"},
        "revenue_micros": MICROS}}},
    "totals": {"type": "object", "properties": {"conversions": {"type": "integer"}, "revenue_micros": MICROS,
               "unattributed": {"type": "integer"}, "unattributed_revenue_micros": MICROS}}}}
schemas["AttributionModel"] = ATTRIBUTION_MODEL
schemas["Attribution"] = {"oneOf": [
    {"allOf": [ref("AttributionModel"), {"type": "object", "properties": {"model": {"enum": ["last_click", "first_touch", "linear", "time_decay", "position_based"]}, "timezone": {"type": "string"}, "windows": ref("AttributionSettings")}}]},
    {"type": "object", "properties": {"models": {"type": "object", "additionalProperties": ref("AttributionModel")}, "timezone": {"type": "string"}, "windows": ref("AttributionSettings")}}]}
DATES = {"type": "object", "properties": {"from": {"type": "string", "format": "date"}, "to": {"type": "string", "format": "date"}}}
schemas["Insight"] = {"type": "object", "properties": {
    "kind": {"enum": ["ad_fatigue", "high_ctr_low_conversion", "ctr_below_own_history", "budget_pacing"]},
    "severity": {"enum": ["info", "warning", "critical"]}, "period": DATES, "baseline": DATES,
    "evidence": {"type": "object"}, "action": {"type": "string"}}}

schemas["WeeklyReportSetting"] = {"type": "object", "properties": {"advertiser_id": ID, "enabled": {"type": "boolean"}}}
schemas["WeeklyReportInput"] = {"type": "object", "required": ["enabled"], "additionalProperties": False,
                                "properties": {"enabled": {"type": "boolean"}, "advertiser_id": ID}}

def items(schema):
    return {"type": "object", "properties": {"items": {"type": "array", "items": ref(schema)}}}

def q(name, schema=None, required=False, desc=None):
    p = {"name": name, "in": "query", "required": required, "schema": schema or {"type": "string"}}
    if desc:
        p["description"] = desc
    return p

def path_param(name, schema=None):
    return {"name": name, "in": "path", "required": True, "schema": schema or ID}

REPORT_PARAMS = [q("range", {"enum": ["today", "yesterday", "last_7_days", "last_30_days", "lifetime"]}), q("from", {"type": "string", "format": "date"}),
                 q("to", {"type": "string", "format": "date"}), q("granularity", {"enum": ["total", "day", "hour"]}),
                 q("group_by", desc="comma-separated subset of campaign, ad, placement, device, country"), q("campaign_id", ID), q("ad_id", ID),
                 q("advertiser_id", ID, desc="admin: whose report, in whose time zone"), q("format", {"enum": ["json", "csv"]})]
ERRORS = {"400": "bad input", "401": "missing or unknown key", "403": "needs the admin key", "404": "not found (or not yours)",
          "409": "conflict with the current state", "413": "body too large", "415": "the body is not JSON (Content-Type)"}

REPORT_LIMIT = ("A report has at most `--max-report-rows` rows (100 000 unless the operator changed it); a larger one is "
                "refused with 400 and the code `report_too_large`, in JSON and CSV alike: ask for a shorter range, `granularity=day` "
                "instead of `hour`, or fewer `group_by` dimensions.")
REPORT_400 = {"description": "bad input (`invalid_report`), or more rows than the report row limit (`report_too_large`)",
              "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}

def op(summary, who, ok, schema=None, body=None, params=None, content="application/json", extra=None):
    o = {"summary": summary, "description": f"Who: {who}.", "responses": {}}
    resp = {"description": "success"}
    if schema:
        resp["content"] = {content: {"schema": ref(schema) if isinstance(schema, str) else schema}}
    o["responses"][str(ok)] = resp
    for code, text in (extra or {}).items():
        o["responses"][code] = {"description": text}
    for code, text in ERRORS.items():
        o["responses"].setdefault(code, {"description": text, "content": {"application/json": {"schema": ref("Error")}}})
    if body:
        o["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(body)}}}
    if params:
        o["parameters"] = params
    if who != "public":
        o["security"] = [{"bearer": []}, {"session": []}]
        o["responses"]["429"] = {"description": "too many failed authentications from this address; see Retry-After",
                                 "content": {"application/json": {"schema": ref("Error")}}}
    return o

paths = {
    "/v1/advertisers": {"post": op("Create an advertiser", "admin", 201, "Advertiser", "NewAdvertiser"),
                        "get": op("List advertisers", "admin", 200, items("Advertiser"))},
    "/v1/advertisers/{id}": {"parameters": [path_param("id")], "patch": op("Change an advertiser (details, pixel cap, attribution settings)", "admin", 200, "Advertiser", "AdvertiserPatch")},
    "/v1/advertisers/{id}/keys": {"parameters": [path_param("id")], "post": op("Create an API key (shown once)", "admin", 201, "NewApiKey"),
                                  "get": op("List an advertiser's keys", "admin, owner", 200, items("ApiKey"))},
    "/v1/advertisers/{id}/credits": {"parameters": [path_param("id")], "post": op("Add credit", "admin", 201, "LedgerEntry", "NewCredit")},
    "/v1/keys/{id}/revoke": {"parameters": [path_param("id")], "post": op("Revoke an API key", "admin, owner", 200)},
    "/v1/me": {"get": op("The calling advertiser and its balance", "advertiser", 200, "Advertiser"),
               "patch": op("Change the calling advertiser's own attribution windows and half-life", "advertiser", 200, "Advertiser", "MePatch")},
    "/v1/session": {
        "post": {**op("Sign in a browser client: trade an API key for the session cookie adtally_session (HttpOnly, "
                      "SameSite=Strict, Secure over https)", "public", 201, "Session", "SignIn"), "security": []},
        "get": {**op("The signed-in session and its CSRF token", "session cookie", 200, "Session"), "security": [{"session": []}]},
        "delete": {**op("Sign out: end the session and remove the cookie", "session cookie (with X-CSRF-Token)", 204,
                        extra={"403": "csrf: the X-CSRF-Token header is missing or wrong"}),
                   # Signing out without a session is a no-op that also answers 204.
                   "security": [{"session": []}, {}]},
    },
    "/v1/ledger": {"get": op("Credits and daily spend", "advertiser, admin", 200, "Ledger", params=[q("advertiser_id", ID)])},
    "/v1/placements": {"post": op("Create a placement", "admin", 201, "Placement", "Placement"),
                       "get": op("List placements", "any key", 200, items("Placement"))},
    "/v1/campaigns": {"post": op("Create a campaign (draft)", "advertiser, admin", 201, "Campaign", "CampaignInput"),
                      "get": op("List campaigns", "advertiser (own), admin (all)", 200, items("Campaign"))},
    "/v1/campaigns/{id}": {"parameters": [path_param("id")], "get": op("Read a campaign", "owner, admin", 200, "Campaign"),
                           "patch": op("Change a campaign", "owner, admin", 200, "Campaign", "CampaignInput")},
    "/v1/campaigns/{id}/ads": {"parameters": [path_param("id")], "post": op("Add an ad (pending review)", "owner, admin", 201, "Ad", "AdInput")},
}
for action, summary in [("submit", "draft → pending_review"), ("pause", "active → paused"), ("resume", "paused → active"),
                        ("archive", "any but pending_review → archived"), ("restore", "archived → paused")]:
    paths[f"/v1/campaigns/{{id}}/{action}"] = {"parameters": [path_param("id")], "post": op(f"Lifecycle: {summary}", "owner, admin", 200, "Campaign")}
paths["/v1/campaigns/{id}/clone"] = {"parameters": [path_param("id")], "post": op("Copy into a new draft, ads back to review", "owner, admin", 201, "Campaign")}
paths.update({
    "/v1/ads": {"get": op("List ads (the review queue with status=pending_review)", "advertiser (own), admin", 200, items("Ad"),
                          params=[q("status", {"enum": ["pending_review", "approved", "rejected"]}), q("campaign_id", ID)])},
    "/v1/ads/{id}": {"parameters": [path_param("id")], "get": op("Read an ad", "owner, admin", 200, "Ad"),
                     "patch": op("Change an ad (back to review)", "owner, admin", 200, "Ad", "AdInput")},
    "/v1/ads/{id}/review": {"parameters": [path_param("id")], "post": op("Approve or reject an ad", "admin", 200, "Ad", "Review")},
    "/v1/decision": {"get": op("Choose an ad for a placement", "public", 200, "Decision", params=[q("placement", required=True), q("uid")],
                               extra={"204": "no ad to show (also while events cannot be recorded)"})},
    "/t/i/{token}": {"parameters": [path_param("token", {"type": "string"})],
                     "get": op("Impression beacon (1×1 GIF)", "public", 200, {"type": "string", "format": "binary"}, content="image/gif"),
                     "post": op("Impression beacon", "public", 204)},
    "/t/v/{token}": {"parameters": [path_param("token", {"type": "string"})], "get": op("Viewable-impression beacon", "public", 204),
                     "post": op("Viewable-impression beacon", "public", 204)},
    "/t/c/{token}": {"parameters": [path_param("token", {"type": "string"})],
                     "get": op("Click: redirect to the target URL of the ad version served, with an adtally_click id appended", "public", 302, extra={"400": "tampered or malformed token"})},
    "/t/conv": {"get": op("Conversion pixel", "public", 200, {"type": "string", "format": "binary"}, content="image/gif",
                          params=[q("advertiser", ID, True), q("uid"), q("click_id", desc="the landing page's adtally_click"),
                                  q("value_micros", MICROS), q("order_id")])},
    "/v1/conversions": {"post": op("Conversion postback", "advertiser, admin", 201, body="Conversion", extra={"200": "order id seen before"})},
    "/v1/events": {"post": {**op("Import historical events (NDJSON)", "admin", 200, "ImportResult"),
                            "requestBody": {"required": True, "content": {"application/x-ndjson": {"schema": {"type": "string"}}}}}},
    "/v1/reports": {"get": {**op("Report: every metric by time and dimensions", "advertiser, admin", 200, "Report", params=REPORT_PARAMS),
                            "description": "Who: advertiser, admin. " + REPORT_LIMIT,
                            "responses": {**op("", "x", 200, "Report")["responses"], "400": REPORT_400, "200": {"description": "success", "content": {
                                "application/json": {"schema": ref("Report")}, "text/csv": {"schema": {"type": "string"}}}}}}},
    "/v1/reports/ivt": {"get": {**op("Invalid traffic by reason", "advertiser, admin", 200, "IvtReport", params=REPORT_PARAMS),
                                "description": "Who: advertiser, admin. " + REPORT_LIMIT,
                                "responses": {**op("", "x", 200, "IvtReport")["responses"], "400": REPORT_400, "200": {"description": "success", "content": {
                                    "application/json": {"schema": ref("IvtReport")}, "text/csv": {"schema": {"type": "string"}}}}}}},
    "/v1/attribution": {"get": op("Conversion credit per campaign and ad under an attribution model (or all side by side)", "advertiser, admin", 200, "Attribution",
                                  params=[q("model", {"enum": ["last_click", "first_touch", "linear", "time_decay", "position_based", "all"]}),
                                          *[p for p in REPORT_PARAMS if p["name"] in ("range", "from", "to", "advertiser_id")]])},
    "/v1/weekly-report": {
        "get": op("Whether the advertiser gets the weekly email report", "advertiser, admin (with advertiser_id)", 200, "WeeklyReportSetting",
                  params=[q("advertiser_id", ID)]),
        "put": op("Opt in or out of the weekly email report", "advertiser, admin (with advertiser_id)", 200, "WeeklyReportSetting", "WeeklyReportInput")},
    "/v1/unsubscribe": {
        "get": op("Page with a button that unsubscribes from the weekly report (changes nothing itself)", "public", 200, {"type": "string"}, content="text/html",
                  params=[q("token", required=True)]),
        "post": op("One-click unsubscribe from the weekly report (RFC 8058)", "public", 200, "WeeklyReportSetting", params=[q("token", required=True)])},
    "/v1/campaigns/{id}/insights": {"parameters": [path_param("id")], "get": op("Alerts from the campaign's own history", "owner, admin", 200, items("Insight"))},
    "/v1/promo-codes": {"post": op("Create a promo code", "admin", 201, body="NewPromo")},
    "/v1/promo-codes/redeem": {"post": op("Redeem a promo code (once per advertiser)", "advertiser", 201, "LedgerEntry", "Redeem")},
    "/v1/audit": {"get": op("Who changed what", "admin", 200, items("AuditEntry"), params=[q("limit", {"type": "integer", "minimum": 1, "maximum": 1000})])},
    "/healthz": {"get": op("Health: ok only while events can be recorded", "public", 200,
                           extra={"503": "the event writer is stopped or failing; the body names the failure"})},
    "/metrics": {"get": op("Prometheus metrics", "public", 200, {"type": "string"}, content="text/plain")},
    "/openapi.json": {"get": op("This document", "public", 200, {"type": "object"})},
    "/": {"get": {**op("The dashboard: the sign-in form, or (signed in) the advertiser's overview or a redirect to the operator's review queue (server-rendered HTML)", "browser", 200,
                       {"type": "string"}, content="text/html"), "security": []}},
    "/tag.js": {"get": op("The ad tag publishers embed: fills <div data-adtally-placement=SLUG> slots, sends the beacons, "
                          "measures viewability", "public", 200, {"type": "string"}, content="text/javascript",
                          extra={"304": "not modified (ETag)"})},
    "/assets/{name}": {"parameters": [path_param("name", {"enum": ["app.js", "app.css"]})],
                       "get": {**op("The dashboard's script and style", "public", 200, extra={"304": "not modified (ETag)"}),
                               "responses": {**op("", "public", 200, extra={"304": "not modified (ETag)"})["responses"],
                                             "200": {"description": "the asset", "content": {"text/javascript": {"schema": {"type": "string"}},
                                                                                             "text/css": {"schema": {"type": "string"}}}}}}},
})
# The decision and the beacons answer CORS requests (and preflights) from any origin.
for path in ["/v1/decision", "/t/i/{token}", "/t/v/{token}", "/t/c/{token}", "/t/conv"]:
    for method, o in paths[path].items():
        if method != "parameters":
            o["description"] += " CORS: any origin (Access-Control-Allow-Origin: *, preflight answered)."
for p in paths.values():
    for m in list(p):
        if m != "parameters":
            p[m]["operationId"] = None
doc = {
    "openapi": "3.1.0",
    "info": {"title": "adtally", "version": "1", "description": "Self-hosted ad server. Money is integer micros; errors are {error:{code,message}}."},
    "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
        "session": {"type": "apiKey", "in": "cookie", "name": "adtally_session", "description":
                    "The dashboard's session (POST /v1/session). Used only without an Authorization header; "
                    "POST, PATCH, PUT and DELETE also need the session's X-CSRF-Token header, else 403 csrf."}}},
    "paths": paths,
}
for path, item in paths.items():
    for method, o in item.items():
        if method != "parameters":
            o["operationId"] = "get_dashboard" if path == "/" else (method + path.replace("/", "_").replace("{", "").replace("}", "").replace("-", "_").replace(".", "_"))
OUT.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
print(f"wrote {OUT} ({len(paths)} paths)")
