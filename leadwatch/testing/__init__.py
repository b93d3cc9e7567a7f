"""leadwatch's testing kit: fake Bitrix24, amoCRM and Telegram servers that speak the real HTTP
formats, moto's server served serially, and a local stack that runs the real handlers against
them with a simulated clock. A process author imports it as Chalice's users import chalice.test."""
