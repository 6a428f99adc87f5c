-- A SQLite database written by netwarden b4bb581 (before migrations): tests/data/README.md
BEGIN TRANSACTION;
CREATE TABLE alert_cursor (
	name VARCHAR(64) NOT NULL, 
	at DATETIME NOT NULL, 
	PRIMARY KEY (name)
);
CREATE TABLE alert_outbox (
	id INTEGER NOT NULL, 
	sink VARCHAR(32) NOT NULL, 
	"key" VARCHAR(128), 
	payload JSON NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	created_at DATETIME NOT NULL, 
	attempts INTEGER NOT NULL, 
	next_attempt_at DATETIME NOT NULL, 
	last_error TEXT NOT NULL, 
	delivered_at DATETIME, 
	superseded_by INTEGER, 
	PRIMARY KEY (id)
);
CREATE TABLE alert_state (
	anomaly_id INTEGER NOT NULL, 
	am_labels JSON, 
	am_firing BOOLEAN NOT NULL, 
	am_sent_at DATETIME, 
	slack VARCHAR(16) NOT NULL, 
	slack_since DATETIME, 
	slack_message INTEGER, 
	PRIMARY KEY (anomaly_id)
);
CREATE TABLE anomalies (
	id INTEGER NOT NULL, 
	identity VARCHAR(512) NOT NULL, 
	namespace VARCHAR(253) NOT NULL, 
	workload VARCHAR(253) NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	ongoing BOOLEAN NOT NULL, 
	first_window_start DATETIME NOT NULL, 
	last_window_end DATETIME NOT NULL, 
	window_count INTEGER NOT NULL, 
	peak_window_start DATETIME NOT NULL, 
	peak_score FLOAT NOT NULL, 
	peak_threshold FLOAT NOT NULL, 
	model VARCHAR(512) NOT NULL, 
	fallback BOOLEAN NOT NULL, 
	reasons JSON NOT NULL, 
	examples JSON NOT NULL, 
	summary TEXT NOT NULL, 
	suppressed_until DATETIME, 
	state_note TEXT NOT NULL, 
	state_actor VARCHAR(256) NOT NULL, 
	created_at DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO "anomalies" VALUES(1,'shop/cart','shop','cart','acknowledged',0,'2026-03-01 12:00:00.000000','2026-03-01 12:02:00.000000',2,'2026-03-01 12:01:00.000000',0.95,0.5,'global',1,'[]','{}','window 1',NULL,'mine','alice','2026-03-01 12:10:00.000000','2026-03-01 12:10:00.000000');
INSERT INTO "anomalies" VALUES(2,'db/pg','db','pg','suppressed',1,'2026-03-01 12:01:00.000000','2026-03-01 12:02:00.000000',1,'2026-03-01 12:01:00.000000',0.7,0.5,'global',1,'[]','{}','window 1','2026-03-31 12:00:00.000000','maintenance','bob','2026-03-01 12:10:00.000000','2026-03-01 12:10:00.000000');
CREATE TABLE audit_events (
	id INTEGER NOT NULL, 
	subject_kind VARCHAR(16) NOT NULL, 
	subject_id INTEGER NOT NULL, 
	at DATETIME NOT NULL, 
	actor VARCHAR(256) NOT NULL, 
	action VARCHAR(32) NOT NULL, 
	from_state VARCHAR(16), 
	to_state VARCHAR(16) NOT NULL, 
	note TEXT NOT NULL, 
	details JSON NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO "audit_events" VALUES(1,'anomaly',1,'2026-03-01 12:10:00.000000','netwarden','open',NULL,'open','first anomalous window 2026-03-01T12:00:00+00:00','{}');
INSERT INTO "audit_events" VALUES(2,'anomaly',2,'2026-03-01 12:10:00.000000','netwarden','open',NULL,'open','first anomalous window 2026-03-01T12:01:00+00:00','{}');
INSERT INTO "audit_events" VALUES(3,'anomaly',1,'2026-03-01 12:10:00.000000','alice','acknowledge','open','acknowledged','mine','{}');
INSERT INTO "audit_events" VALUES(4,'anomaly',2,'2026-03-01 12:10:00.000000','bob','suppress','open','suppressed','maintenance','{}');
INSERT INTO "audit_events" VALUES(5,'proposal',1,'2026-03-01 12:10:00.000000','rita','propose',NULL,'proposed','baseline proposal: 1 validation problem(s)','{"problems": [{"path": "spec", "message": "set at least one of ingress, ingressDeny, egress, egressDeny (none is set)"}]}');
INSERT INTO "audit_events" VALUES(6,'proposal',1,'2026-03-01 12:10:00.000000','sam','reject','proposed','rejected','too wide','{}');
CREATE TABLE proposals (
	id INTEGER NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	identity VARCHAR(512) NOT NULL, 
	anomaly_id INTEGER, 
	policy JSON NOT NULL, 
	patch JSON, 
	current JSON, 
	state VARCHAR(16) NOT NULL, 
	problems JSON NOT NULL, 
	warnings JSON DEFAULT '[]' NOT NULL, 
	dry_run JSON, 
	change JSON, 
	note TEXT NOT NULL, 
	created_at DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO "proposals" VALUES(1,'baseline','shop/cart',NULL,'{"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": "cart", "namespace": "shop"}, "spec": {"endpointSelector": {"matchLabels": {"k8s:app": "cart"}}}}','null','null','rejected','[{"path": "spec", "message": "set at least one of ingress, ingressDeny, egress, egressDeny (none is set)"}]','[]','null','null','','2026-03-01 12:10:00.000000','2026-03-01 12:10:00.000000');
CREATE TABLE scored_windows (
	id INTEGER NOT NULL, 
	identity VARCHAR(512) NOT NULL, 
	namespace VARCHAR(253) NOT NULL, 
	workload VARCHAR(253) NOT NULL, 
	window_start DATETIME NOT NULL, 
	window_end DATETIME NOT NULL, 
	score FLOAT NOT NULL, 
	threshold FLOAT NOT NULL, 
	anomalous BOOLEAN NOT NULL, 
	model VARCHAR(512) NOT NULL, 
	fallback BOOLEAN NOT NULL, 
	reasons JSON NOT NULL, 
	examples JSON NOT NULL, 
	summary TEXT NOT NULL, 
	anomaly_id INTEGER, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_scored_windows_identity_start UNIQUE (identity, window_start), 
	FOREIGN KEY(anomaly_id) REFERENCES anomalies (id)
);
INSERT INTO "scored_windows" VALUES(1,'shop/cart','shop','cart','2026-03-01 12:00:00.000000','2026-03-01 12:01:00.000000',0.9,0.5,1,'global',1,'[]','{}','window 0',1);
INSERT INTO "scored_windows" VALUES(2,'db/pg','db','pg','2026-03-01 12:00:00.000000','2026-03-01 12:01:00.000000',0.2,0.5,0,'global',1,'[]','{}','window 0',NULL);
INSERT INTO "scored_windows" VALUES(3,'shop/cart','shop','cart','2026-03-01 12:01:00.000000','2026-03-01 12:02:00.000000',0.95,0.5,1,'global',1,'[]','{}','window 1',1);
INSERT INTO "scored_windows" VALUES(4,'db/pg','db','pg','2026-03-01 12:01:00.000000','2026-03-01 12:02:00.000000',0.7,0.5,1,'global',1,'[]','{}','window 1',2);
INSERT INTO "scored_windows" VALUES(5,'shop/cart','shop','cart','2026-03-01 12:02:00.000000','2026-03-01 12:03:00.000000',0.1,0.5,0,'global',1,'[]','{}','window 2',NULL);
CREATE INDEX ix_audit_events_subject ON audit_events (subject_kind, subject_id, id);
CREATE INDEX ix_anomalies_updated ON anomalies (updated_at, id);
CREATE INDEX ix_anomalies_ongoing_end ON anomalies (ongoing, last_window_end);
CREATE INDEX ix_anomalies_state_suppressed_until ON anomalies (state, suppressed_until);
CREATE INDEX ix_anomalies_identity_end ON anomalies (identity, last_window_end);
CREATE INDEX ix_anomalies_namespace_end ON anomalies (namespace, last_window_end);
CREATE INDEX ix_anomalies_state_end ON anomalies (state, last_window_end);
CREATE INDEX ix_anomalies_last_window_end ON anomalies (last_window_end);
CREATE INDEX ix_proposals_identity ON proposals (identity, id);
CREATE INDEX ix_proposals_state ON proposals (state, id);
CREATE INDEX ix_alert_outbox_status_next ON alert_outbox (status, next_attempt_at);
CREATE INDEX ix_alert_outbox_sink_created ON alert_outbox (sink, created_at);
CREATE INDEX ix_alert_outbox_sink_key_status ON alert_outbox (sink, "key", status);
CREATE INDEX ix_alert_outbox_created ON alert_outbox (created_at);
CREATE INDEX ix_alert_state_slack ON alert_state (slack);
CREATE INDEX ix_alert_state_am_firing ON alert_state (am_firing);
CREATE INDEX ix_scored_windows_anomaly_id ON scored_windows (anomaly_id);
COMMIT;
