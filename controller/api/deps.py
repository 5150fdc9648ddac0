"""The dependencies routes declare, as ``Annotated`` aliases.

Every app the controller builds keeps its :class:`~controller.bootstrap.Container` in
``app.state.container``; routes take what they need from it through these aliases instead of
reaching into the request, so a test can build an app around any container.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from controller.bootstrap import Container
from controller.services import Services
from controller.settings import Settings


def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]


def get_services(container: ContainerDep) -> Services:
    return container.services


def get_settings(container: ContainerDep) -> Settings:
    return container.settings


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
