"""A FastAPI service that records its logins in tierlog.

    pip install ./clients/python fastapi uvicorn
    TIERLOG_URL=http://127.0.0.1:8080 TIERLOG_KEY=... uvicorn examples.fastapi_app:app
    curl -X POST 'http://127.0.0.1:8000/login?user=alice&password=wrong'
"""

import logging
import os

from fastapi import FastAPI, HTTPException

from tierlog import AuditClient, AuditContextMiddleware, AuditHandler

audit = AuditClient(os.environ.get("TIERLOG_URL", "http://127.0.0.1:8080"), os.environ["TIERLOG_KEY"],
                    tenant_id="example", application="fastapi-example")
app = FastAPI()
app.add_middleware(AuditContextMiddleware, trusted_proxies=["127.0.0.1"])

# Existing audit logging keeps working: its records go to tierlog too.
legacy = logging.getLogger("app.audit")
legacy.setLevel(logging.INFO)
legacy.addHandler(AuditHandler(audit))

USERS = {"alice": "correct horse"}


@app.post("/login")
def login(user: str, password: str):
    if USERS.get(user) != password:
        audit.login_failed(user, reason="invalid password")
        raise HTTPException(status_code=401, detail="invalid credentials")
    audit.login_succeeded(user)
    return {"ok": True}


@app.post("/invoices/{invoice_id}/send")
def send_invoice(invoice_id: str, user: str):
    audit.entity_updated("invoice", invoice_id, before={"status": "draft"}, after={"status": "sent"}, user_id=user)
    legacy.info("invoice sent", extra={"category": "audit", "action": "invoice.sent", "user_id": user,
                                       "resource": "invoice", "resource_id": invoice_id})
    return {"status": "sent"}
