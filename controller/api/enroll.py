"""Enrollment: an agent trades a single-use token and its CSR for a node certificate.

Served on the HTTPS enrollment listener (a certificate of the cluster CA, which the token
pins). The CA certificate itself is public and served to anyone: the agent accepts it only
if its fingerprint is the one in the token.
"""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from controller.bootstrap import Container
from controller.domain.errors import EnrollmentRefused, InvalidInput
from proto.nodeapi.v1.enrollment import CA_PATH, ENROLL_PATH

log = structlog.get_logger(__name__)

MAX_CSR_CHARS = 16_384


def _container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(_container)]


class EnrollRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=128)
    csr: str = Field(min_length=1, max_length=MAX_CSR_CHARS)


router = APIRouter(tags=["enrollment"])


@router.get(CA_PATH)
async def ca_certificate(container: ContainerDep) -> Response:
    pem = await container.services.nodes.ca_certificate()
    if pem is None:
        raise HTTPException(404, "no cluster CA yet: add a node first (vpnbot node add)")
    return Response(pem, media_type="application/x-pem-file")


@router.post(ENROLL_PATH)
async def enroll(body: EnrollRequest, request: Request, container: ContainerDep) -> JSONResponse:
    peer = request.client.host if request.client else "?"
    try:
        enrolled = await container.services.nodes.enroll(body.token, body.csr.encode())
    except EnrollmentRefused as exc:
        log.warning("enrollment_refused", peer=peer)
        return JSONResponse({"error": exc.code, "detail": exc.message}, status_code=403)
    except InvalidInput as exc:
        log.warning("enrollment_bad_csr", peer=peer, error=exc.message)
        return JSONResponse({"error": exc.code, "detail": exc.message}, status_code=400)
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
    app.include_router(router)
    return app
