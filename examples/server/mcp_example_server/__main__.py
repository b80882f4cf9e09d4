"""``python -m mcp_example_server``: run the example MCP server."""

from mcp_example_server import main

main()
