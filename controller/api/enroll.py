"""Enrollment: an agent trades a single-use token and its CSR for a node certificate.

Served on the HTTPS enrollment listener (a certificate of the cluster CA, which the token
pins). The CA certificate itself is public and served to anyone: the agent accepts it only
if its fingerprint is the one in the token.
"""

from __future__ import annotations

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from controller.api.deps import ServicesDep
from controller.api.errors import install_error_handlers
from controller.bootstrap import Container
from controller.domain.errors import NotFound
from proto.nodeapi.v1.enrollment import CA_PATH, ENROLL_PATH

log = structlog.get_logger(__name__)

MAX_CSR_CHARS = 16_384


class EnrollRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=128)
    csr: str = Field(min_length=1, max_length=MAX_CSR_CHARS)


router = APIRouter(tags=["enrollment"])


@router.get(CA_PATH)
async def ca_certificate(services: ServicesDep) -> Response:
    pem = await services.nodes.ca_certificate()
    if pem is None:
        raise NotFound("no cluster CA yet: add a node first (vpnbot node add)")
    return Response(pem, media_type="application/x-pem-file")


@router.post(ENROLL_PATH)
async def enroll(body: EnrollRequest, request: Request, services: ServicesDep) -> JSONResponse:
    # A refused token or a bad CSR propagates as a domain error: see controller.api.errors.
    enrolled = await services.nodes.enroll(body.token, body.csr.encode())
    peer = request.client.host if request.client else "?"
    log.info("node_enrolled", node_id=enrolled.node_id, peer=peer)
    return JSONResponse(
        {
            "node_id": enrolled.node_id,
            "certificate": enrolled.certificate_pem.decode(),
            "ca_certificate": enrolled.ca_certificate_pem.decode(),
        }
    )


def create_enrollment_app(container: Container) -> FastAPI:
    """The app of the public HTTPS enrollment listener: these two routes and nothing else
    (no docs, no health details)."""
    app = FastAPI(title="vpnbot enrollment", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.container = container
    install_error_handlers(app)
    app.include_router(router)
    return app
