"""The informer against the real apiserver: list + watch, resume, and the 410 relist after
etcd compaction (tests/kube_plane.py)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from corral.kube.client import pods_path
from corral.kube.watch import Backoff, Change, ChangeType, Informer
from tests.kube_agent import create_pods, pod_body
from tests.kube_plane import KubePlane

pytestmark = pytest.mark.slow
_names = itertools.count()


async def _until(what: str, check: object, timeout_s: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while loop.time() < end:
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_watch_relists_after_compaction_and_restart(kube_plane: KubePlane) -> None:
    node = f"watch-node-{next(_names)}"
    kube_plane.ensure_namespace(node)
    create_pods(kube_plane, [pod_body(f"w{i}", node, namespace=node) for i in range(3)])
    changes: list[Change] = []

    async def scenario() -> None:
        async with kube_plane.client() as client:
            informer = Informer(
                client,
                pods_path(),
                changes.append,
                params={"fieldSelector": f"spec.nodeName={node}"},
                backoff=Backoff(initial_s=0.05, max_s=0.5),
            )
            task = asyncio.create_task(informer.run())
            await asyncio.wait_for(informer.synced.wait(), 60)
            assert sorted(informer.cache) == [f"{node}/w{i}" for i in range(3)]
            # Live changes arrive through the watch.
            await asyncio.to_thread(
                create_pods, kube_plane, [pod_body("live", node, namespace=node)]
            )
            await _until("the live pod", lambda: f"{node}/live" in informer.cache)
            old_version = informer.resource_version
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            # While nobody watches: one pod goes, one comes, etcd is compacted and the
            # apiserver restarts, so the old resourceVersion is gone for good.
            await asyncio.to_thread(
                kube_plane.request,
                "DELETE",
                f"/api/v1/namespaces/{node}/pods/w0?gracePeriodSeconds=0",
            )
            await asyncio.to_thread(
                create_pods, kube_plane, [pod_body("new", node, namespace=node)]
            )
            await asyncio.to_thread(kube_plane.compact_etcd)
            await asyncio.to_thread(kube_plane.restart_apiserver, 0.2)
            # The apiserver says so in the stream: an ERROR event with a 410 Status.
            first = None
            async for event in client.watch(
                pods_path(), timeout_s=5, resourceVersion=str(old_version)
            ):
                first = event
                break
            assert first is not None and first["type"] == "ERROR"
            assert first["object"]["code"] == 410
            # The informer resumes from the stale version: 410, relist, and the pod that
            # vanished meanwhile is reported deleted.
            changes.clear()
            relists = informer.relists
            task = asyncio.create_task(informer.run())
            await _until("a relist", lambda: informer.relists > relists)
            await _until("the new pod", lambda: f"{node}/new" in informer.cache)
            assert f"{node}/w0" not in informer.cache
            deleted = [c.key for c in changes if c.type is ChangeType.DELETED]
            assert deleted == [f"{node}/w0"]
            assert any(c.type is ChangeType.SYNCED for c in changes)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())


def test_nrt_writer_never_loses_an_update(kube_plane: KubePlane) -> None:
    from corral.kube import nrt
    from corral.kube.publish import NrtWriter

    name = f"nrt-writer-{next(_names)}"

    def obj(policy: str) -> nrt.NodeResourceTopology:
        zone = nrt.Zone("node-0", nrt.ZONE_TYPE_NODE, (nrt.ResourceInfo("cpu", "4", "4", "4"),))
        return nrt.NodeResourceTopology(
            name, (zone,), (nrt.AttributeInfo(nrt.ATTR_POLICY, policy),)
        )

    async def scenario() -> None:
        async with kube_plane.client() as client:
            writer = NrtWriter(client, name)
            assert await writer.write(obj("none"))
            assert not await writer.write(obj("none"))  # unchanged: not written
            # Someone else writes in between: the writer's version is now stale.
            other = nrt.nrt_from_json(await client.get(writer.path))
            await client.replace(
                writer.path,
                nrt.NodeResourceTopology(
                    name,
                    other.zones,
                    (nrt.AttributeInfo(nrt.ATTR_POLICY, "restricted"),),
                    resource_version=other.resource_version,
                ).to_json(),
            )
            assert await writer.write(obj("single-numa-node"))
            assert writer.conflicts == 1  # 409 on the stale version, read again, then written
            final = nrt.nrt_from_json(await client.get(writer.path))
            assert final.attribute(nrt.ATTR_POLICY) == "single-numa-node"
            await client.delete(writer.path)

    asyncio.run(scenario())
