"""A webrtc-p2p member in Python: jsonrpcclient makes the calls, jsonrpcserver
answers the server's, websockets carries them. It speaks no WebRTC, so the
others relay to it through the server; it answers each unicast in upper case.
Usage: python client.py ws://127.0.0.1:3001/ws [GROUP_ID]  (no id: a new group)"""
import asyncio, json, sys
import websockets
from jsonrpcclient import Ok, notification, parse, request
from jsonrpcserver import Error, Success, async_dispatch, method

NO_WEBRTC = {"signal": {"webrtc": False}}  # sent to each member, so it relays to us at once

async def main(url, group=None):
    async with websockets.connect(url) as ws:
        waiting = {}  # our request ids -> futures of their responses

        @method
        async def relay(group_id, from_user_id, data):
            if data.get("signal", {}).get("description", {}).get("type") == "offer":
                return Error(-32011, "no WebRTC here")  # NoWebRtc: the link is relayed at once
            if "broadcast" in data:
                print(f"{from_user_id}: {json.dumps(data['broadcast'], separators=(',', ':'))}", flush=True)
            body = data.get("unicast")
            return Success({"text": body["text"].upper()} if body and "text" in body else body)

        @method
        async def member_joined(group_id, user_id):
            await ws.send(json.dumps(notification("relay", [group_id, user_id, NO_WEBRTC])))
            return Success(None)

        async def call(name, params):
            message = request(name, params)
            answered = waiting[message["id"]] = asyncio.get_running_loop().create_future()
            await ws.send(json.dumps(message))
            response = parse(await answered)
            if not isinstance(response, Ok):
                raise RuntimeError(f"{name}: {response}")
            return response.result

        async def read():
            async for text in ws:
                message = json.loads(text)
                if "method" in message:  # a request or notification from the server
                    if answer := await async_dispatch(text):
                        await ws.send(answer)
                else:
                    waiting.pop(message["id"]).set_result(message)

        reader = asyncio.create_task(read())
        me = await call("init", [])
        group = group or await call("create", [])
        await call("join", [group])  # joining again is harmless for the creator
        print(f"member {me} of group {group}", flush=True)
        for member in await call("get_members", [group]):
            if member != me:
                await ws.send(json.dumps(notification("relay", [group, member, NO_WEBRTC])))
        await reader

asyncio.run(main(*sys.argv[1:]))
