"""python-hl7's asyncio MLLP server, storing nothing: the reference of the store_economy bench.

Prints the port it listens on (127.0.0.1, port 0), then answers every message with
python-hl7's own ACK (Message.create_ack) until killed.
"""
import asyncio

import hl7
from hl7.mllp import start_hl7_server


async def handle(reader, writer):
    try:
        while not writer.is_closing():
            message = await reader.readmessage()
            writer.writemessage(message.create_ack())
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    server = await start_hl7_server(handle, host="127.0.0.1", port=0, limit=1 << 20)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
