"""The dashboard: pages served by the API's app, and the chart data behind them."""
